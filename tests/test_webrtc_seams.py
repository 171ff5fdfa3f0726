"""The private seams of aiortc / aioice (and asyncio) the lab plugs into, checked one by one.

voicelab puts aiortc peers on its own network and clock, and swaps aiortc's encoder and
jitter buffer, through names that are not public API (../shared/design/AIORTC-SEAMS.md;
``voicelab.webrtc.peer``, ``voicelab.net.vclock``, ``voicelab.net.vnet_iface``).
pyproject.toml pins the versions they were written against (``aiortc<1.17``,
``aioice<0.14``). When an upgrade moves one, the test for that seam fails and names it,
the installed version and the pin, instead of a call failing somewhere deep inside.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
WRITTEN_AGAINST = {"aiortc": "1.16.0", "aioice": "0.13.0"}


def _pin(dist: str) -> str:
    """The requirement pyproject.toml gives ``dist`` (e.g. ``aiortc>=1.9,<1.17``)."""
    text = (REPO / "pyproject.toml").read_text()
    m = re.search(rf'"({re.escape(dist)}\s*[<>=!~][^"]*)"', text)
    assert m, f"pyproject.toml has no version pin for {dist}"
    return m.group(1).replace(" ", "")


def _where(dist: str) -> str:
    return (f"{dist} {metadata.version(dist)} installed; voicelab's seams were written against {dist} "
            f"{WRITTEN_AGAINST[dist]} and pyproject pins {_pin(dist)}")


def _seam(ok: bool, dist: str, seam: str, used_by: str) -> None:
    if not ok:
        pytest.fail(f"aiortc seam moved: {seam} (used by {used_by}) is gone or changed; {_where(dist)}. "
                    "Re-read that library's source, update the seam and ../shared/design/AIORTC-SEAMS.md, "
                    "then the pin.", pytrace=False)


def _source(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


@pytest.mark.parametrize("dist", ["aiortc", "aioice"])
def test_installed_versions_satisfy_the_pin(dist):
    req = Requirement(_pin(dist))
    assert req.specifier.contains(metadata.version(dist), prereleases=True), _where(dist)
    # the pin stops below the next minor release, so an upgrade is a deliberate act
    assert any(s.operator == "<" for s in req.specifier), f"{dist} needs an upper bound in pyproject.toml"


@pytest.fixture(scope="module")
def transceiver():
    """A real aiortc peer's audio transceiver (no network: nothing is gathered)."""
    from aiortc import RTCPeerConnection

    async def make():
        pc = RTCPeerConnection()
        t = pc.addTransceiver("audio")
        facts = {
            "sender": t.sender, "receiver": t.receiver,
            "ice_transport": t.receiver.transport.transport,
        }
        await pc.close()
        return facts

    return asyncio.run(make())


# --- aiortc: the lab's encoder and jitter buffer (voicelab.webrtc.peer) -------------------

def test_sender_encoder_slot(transceiver):
    from aiortc.rtcrtpsender import RTCRtpSender

    s = transceiver["sender"]
    _seam(hasattr(s, "_RTCRtpSender__encoder") and s._RTCRtpSender__encoder is None, "aiortc",
          "RTCRtpSender.__encoder (set to None in __init__)", "LabRtpSender.send")
    cls = _source(RTCRtpSender)  # 1.16: in _next_encoded_frame, called from _run_rtp
    _seam("if self.__encoder is None:" in cls and "self.__encoder = get_encoder(codec)" in cls, "aiortc",
          "RTCRtpSender creating its encoder (get_encoder) only when __encoder is None", "LabRtpSender.send")
    _seam(inspect.iscoroutinefunction(RTCRtpSender.send), "aiortc", "async RTCRtpSender.send(parameters)",
          "LabRtpSender.send")


def test_receiver_jitter_buffer_slot(transceiver):
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    r = transceiver["receiver"]
    _seam(hasattr(r, "_RTCRtpReceiver__jitter_buffer") and hasattr(r._RTCRtpReceiver__jitter_buffer, "add"),
          "aiortc", "RTCRtpReceiver.__jitter_buffer (created in __init__, has add())", "LabRtpReceiver.receive")
    handle = _source(RTCRtpReceiver._handle_rtp_packet) if hasattr(RTCRtpReceiver, "_handle_rtp_packet") else ""
    _seam("pli_flag, encoded_frame = self.__jitter_buffer.add(packet)" in handle, "aiortc",
          "RTCRtpReceiver._handle_rtp_packet calling __jitter_buffer.add(packet) -> (pli_flag, frame)",
          "voicelab.webrtc.peer._JitterTap.add")
    _seam(hasattr(r, "_track"), "aiortc", "RTCRtpReceiver._track (the remote track)", "LabRtpReceiver.receive")
    _seam(inspect.iscoroutinefunction(RTCRtpReceiver.receive), "aiortc", "async RTCRtpReceiver.receive(parameters)",
          "LabRtpReceiver.receive")


def test_sender_and_receiver_classes_can_be_swapped(transceiver):
    """``obj.__class__ = LabRtpSender`` needs plain instances (no __slots__ on the way)."""
    from voicelab.webrtc.peer import LabRtpReceiver, LabRtpSender

    for obj, lab in ((transceiver["sender"], LabRtpSender), (transceiver["receiver"], LabRtpReceiver)):
        original = obj.__class__
        try:
            obj.__class__ = lab
            ok = type(obj) is lab
        except TypeError:
            ok = False
        finally:
            obj.__class__ = original
        _seam(ok, "aiortc", f"{original.__name__} instances accepting __class__ = {lab.__name__}",
              "voicelab.webrtc.peer.make_peer_connection")


def test_encoder_base_class():
    from aiortc.codecs.base import Encoder

    _seam(hasattr(Encoder, "encode") and hasattr(Encoder, "pack"), "aiortc",
          "aiortc.codecs.base.Encoder with encode() and pack()", "LabEncoder")


def test_ice_connection_and_nominated_pair(transceiver):
    import aioice

    ice = transceiver["ice_transport"]
    conn = getattr(ice, "_connection", None)
    _seam(isinstance(conn, aioice.Connection), "aiortc", "RTCIceTransport._connection (an aioice.Connection)",
          "voicelab.webrtc.peer.selected_pair")
    _seam(isinstance(getattr(conn, "_nominated", None), dict), "aioice",
          "aioice.Connection._nominated (component -> CandidatePair)", "voicelab.webrtc.peer.selected_pair")


def test_module_level_helpers():
    import aiortc.rtcicetransport as icet
    import aiortc.sdp as sdp
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack  # noqa: F401

    _seam(callable(getattr(icet, "parse_stun_turn_uri", None)), "aiortc",
          "aiortc.rtcicetransport.parse_stun_turn_uri", "voicelab.webrtc.peer (TURN/STUN URLs)")
    _seam(callable(getattr(sdp, "candidate_from_sdp", None)), "aiortc", "aiortc.sdp.candidate_from_sdp",
          "voicelab.webrtc.agent._on_candidate")


# --- aioice: host addresses and sockets (voicelab.webrtc.peer.ice_scope, voicelab.net) ------

def test_host_addresses_are_looked_up_at_call_time():
    import aioice.ice as ice

    _seam(callable(getattr(ice, "get_host_addresses", None)), "aioice", "aioice.ice.get_host_addresses",
          "voicelab.webrtc.peer.ice_scope")
    gather = _source(ice.Connection.gather_candidates)
    _seam("get_host_addresses(" in gather, "aioice",
          "Connection.gather_candidates calling the module-level get_host_addresses at call time",
          "voicelab.webrtc.peer.ice_scope")
    params = list(inspect.signature(ice.get_host_addresses).parameters)
    _seam(params == ["use_ipv4", "use_ipv6"], "aioice", "get_host_addresses(use_ipv4, use_ipv6)",
          "voicelab.webrtc.peer._scoped_get_host_addresses")


def test_host_candidates_use_the_loops_datagram_endpoint():
    import aioice.ice as ice

    src = _source(ice)
    _seam("create_datagram_endpoint" in src and 'get_extra_info("sockname")' in src, "aioice",
          "host candidates via loop.create_datagram_endpoint and get_extra_info('sockname')",
          "voicelab.net.vnet_iface (in-memory transports)")


def test_turn_and_stun_helpers():
    import aioice.stun as stun
    import aioice.turn as turn

    _seam(inspect.iscoroutinefunction(getattr(turn, "create_turn_endpoint", None)), "aioice",
          "aioice.turn.create_turn_endpoint", "voicelab.net.turn / voicelab.net.coturn (tests, docs)")
    for name in ("Message", "parse_message", "Method", "Class"):
        _seam(hasattr(stun, name), "aioice", f"aioice.stun.{name}", "voicelab.net.stun / turn / coturn")


# --- asyncio (CPython) internals used by the virtual clock and in-memory TLS ----------------

def test_asyncio_internals_for_the_virtual_clock():
    loop = asyncio.new_event_loop()
    try:
        where = f"Python {sys.version.split()[0]}"
        for name in ("_scheduled", "_clock_resolution", "_debug", "_run_once"):
            if not hasattr(loop, name):
                pytest.fail(f"asyncio seam moved: BaseEventLoop.{name} (used by voicelab.net.vclock) is gone in {where}",
                            pytrace=False)
        h = asyncio.TimerHandle(0.0, lambda: None, (), loop)
        for name in ("_when", "_scheduled", "_source_traceback"):
            if not hasattr(h, name):
                pytest.fail(f"asyncio seam moved: TimerHandle.{name} (used by voicelab.net.vclock) is gone in {where}",
                            pytrace=False)
    finally:
        loop.close()


def test_asyncio_sslproto_app_transport():
    from asyncio import sslproto

    init = _source(sslproto.SSLProtocol.__init__)
    if "_app_transport" not in init or "call_connection_made" not in str(inspect.signature(sslproto.SSLProtocol)):
        pytest.fail(f"asyncio seam moved: sslproto.SSLProtocol(..., call_connection_made=) and ._app_transport "
                    f"(used by voicelab.net.vnet_iface TLS) changed in Python {sys.version.split()[0]}", pytrace=False)


def test_a_moved_seam_is_reported_by_name_and_pin():
    with pytest.raises(pytest.fail.Exception) as info:
        _seam(False, "aiortc", "RTCRtpSender.__encoder", "LabRtpSender.send")
    msg = str(info.value)
    assert "RTCRtpSender.__encoder" in msg and "LabRtpSender.send" in msg
    assert f"aiortc {metadata.version('aiortc')} installed" in msg and _pin("aiortc") in msg
