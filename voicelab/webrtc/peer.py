"""aiortc peers made measurable: offline ICE on the lab's network, the lab's codecs and playout.

aiortc (1.16) is the lab's WebRTC stack, used as it is and plugged into at its seams;
nothing here forks it. A peer made by :func:`make_peer_connection` differs from a plain
``RTCPeerConnection`` in four ways, each scoped to that one peer:

Offline by default
    ``iceServers=[]`` unless servers are given: plain aiortc adds a public STUN server
    when the list is unset (``RTCIceGatherer.getDefaultIceServers``,
    ``aiortc/rtcicetransport.py`` ~line 195/229). Servers must be IP literals (the lab
    never resolves names: aioice would do it in an executor, ``aioice/ice.py`` ~160).

Sockets and host addresses through the network interface
    aioice opens every UDP endpoint with ``asyncio.get_running_loop()
    .create_datagram_endpoint`` (host candidates ``aioice/ice.py`` ~1148, TURN/UDP
    ``aioice/turn.py`` ~529; TURN/TCP uses ``create_connection``, ~516) and asks
    ``aioice.ice.get_host_addresses`` for the addresses to bind (~581; it drops
    127.0.0.1 and ::1, so plain aiortc cannot call itself on loopback). While one of
    these peers sets a description (the only time aioice opens sockets: gathering), a
    :func:`ice_scope` is active: a :mod:`contextvars` variable names the peer's
    network interface, ``aioice.ice.get_host_addresses`` answers
    ``iface.host_addresses()`` and the running loop's ``create_datagram_endpoint`` /
    ``create_connection`` (instance attributes shadowing the loop's methods) hand the
    request to ``iface``. Code running outside a scope (another task, another library)
    reaches the originals. The replacements are reference-counted and removed when the
    last scope ends: nothing stays patched between calls (:func:`patches_active`).
    Every endpoint so opened is logged (:class:`SocketRecord`): local address and every
    datagram sent and received with its loop time, size and kind (STUN, DTLS, RTP,
    RTCP, TURN), which gives the exact bytes on the wire.

The lab's encoder (``mode="lab"``)
    ``RTCRtpSender._run_rtp`` creates its encoder with ``get_encoder(codec)`` only when
    ``self.__encoder`` is None (``aiortc/rtcrtpsender.py`` lines 308-309); aiortc's own
    Opus encoder is FFmpeg's at a fixed 96 kbps (``aiortc/codecs/opus.py``). The lab's
    sender (:class:`LabRtpSender`, swapped onto the peer's sender object) sets that
    attribute in :meth:`~LabRtpSender.send` (line 204, the moment the negotiated codec
    is known) to a :class:`LabEncoder` wrapping a :mod:`voicelab.codecs` object:
    Opus through ctypes libopus with bitrate, FEC, DTX and expected loss, or G.711 /
    G.722. It has no ``target_bitrate``, so REMB feedback (line 289) leaves the bit
    rate alone. With ``encode_inline`` the sender's ``_next_encoded_frame`` (aiortc's
    one-frame step, which runs the encoder in the thread pool) is overridden to encode
    on the loop. With DTX, payloads of at most 2 bytes are not sent (as in the
    simulator); the RTP timestamp still advances, so the receiver sees a DTX pause.

The lab's jitter buffer and PLC (``mode="lab"``)
    aiortc's audio receiver puts packets into a fixed 16-packet ``JitterBuffer`` with a
    4-packet prefetch and no concealment (``aiortc/rtcrtpreceiver.py`` line 295) and
    decodes in a thread. :class:`LabRtpReceiver` replaces that buffer object, per
    receiver, in :meth:`~LabRtpReceiver.receive` with a tap whose ``add`` (called at
    line 551 after SRTP, RTCP statistics and depayloading) hands the packet, stamped
    with the loop clock, to a :class:`LabPlayout`: the lab's
    :class:`~voicelab.rtp.jitterbuffer.FixedJitterBuffer` or
    :class:`~voicelab.rtp.jitterbuffer.AdaptiveJitterBuffer` (``"adaptive"`` or the
    self-sizing ``"auto"``) and
    :func:`voicelab.rtp.playout.render` (decode, FEC, PLC) on a loop-clock playout
    timer, the same pieces as the SIP stack and the simulator. aiortc's decoder thread
    stays idle; its statistics, RTCP and ``getStats()`` work unchanged. The played
    frames go to an :class:`~voicelab.webrtc.media.AudioSink` (loop-time recording) and,
    as ``av.AudioFrame``, to the receiver's track, so consumers of ``receiver.track``
    get the lab's playout.

``mode="aiortc-defaults"`` leaves sender and receiver alone (still offline, still on
the network interface): the baseline a plain aiortc user (e.g. Pipecat) gets.

The sender and receiver classes are swapped with ``obj.__class__ = Lab...`` on this
peer's objects only; subclasses reach aiortc's name-mangled attributes
(``_RTCRtpSender__encoder``, ``_RTCRtpReceiver__jitter_buffer``), checked on use so an
aiortc upgrade that renames them fails loudly (:class:`~voicelab.errors.VoicelabError`).

This module is an asyncio adapter (it imports :mod:`asyncio`); it reads only the event
loop's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import ssl as _ssl
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .. import codecs as _codecs
from ..errors import CodecError, ParameterError, VoicelabError
from ..rtp.jitterbuffer import AdaptiveJitterBuffer, FixedJitterBuffer
from ..rtp.packet import RtpPacket
from ..rtp.playout import render

import aioice.ice as _aioice_ice
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.codecs.base import Encoder as _AiortcEncoder
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.rtcicetransport import parse_stun_turn_uri
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCEncodedFrame, RTCRtpSender

__all__ = [
    "MODES",
    "WEBRTC_CODECS",
    "MediaConfig",
    "SocketRecord",
    "LabPeerConnection",
    "LabEncoder",
    "LabPlayout",
    "LabRtpSender",
    "LabRtpReceiver",
    "make_peer_connection",
    "ice_scope",
    "patches_active",
    "prefer_codec",
    "selected_pair",
    "stats_summary",
    "classify_datagram",
]

#: ``"lab"``: the lab's encoder and playout; ``"aiortc-defaults"``: plain aiortc media.
MODES = ("lab", "aiortc-defaults")

#: Lab codec name -> aiortc MIME type (the codecs aiortc negotiates for audio).
WEBRTC_CODECS = {"opus": "audio/opus", "pcmu": "audio/PCMU", "pcma": "audio/PCMA", "g722": "audio/G722"}
_BY_MIME = {v.lower(): k for k, v in WEBRTC_CODECS.items()}

#: The originals, taken at import (before any scope can exist).
_ORIGINAL_GET_HOST_ADDRESSES = _aioice_ice.get_host_addresses


# ---------------------------------------------------------------------------------------
# Socket log
# ---------------------------------------------------------------------------------------


def classify_datagram(data: bytes) -> str:
    """What a datagram on an ICE socket is, by its first bytes (RFC 7983, RFC 5761).

    Returns one of ``"stun"``, ``"dtls"``, ``"rtp"``, ``"rtcp"``, ``"other"``, or for
    TURN ChannelData (RFC 8656 section 12.4) ``"turn-"`` followed by the kind of what it
    carries (``"turn-rtp"``, ``"turn-dtls"``, ...).
    """
    if not data:
        return "other"
    b = data[0]
    if b < 4:
        return "stun"
    if 20 <= b < 64:
        return "dtls"
    if 64 <= b < 80:
        inner = classify_datagram(bytes(data[4:])) if len(data) > 4 else "other"
        return "turn-" + inner.replace("turn-", "")
    if 128 <= b < 192:
        return "rtcp" if len(data) > 1 and 192 <= data[1] <= 223 else "rtp"
    return "other"


@dataclass
class SocketRecord:
    """One endpoint aioice opened through the network interface, and its traffic.

    Attributes
    ----------
    local_addr : tuple
        Bound (host, port).
    remote_addr : tuple or None
        Connected peer (TURN over UDP), else None.
    kind : str
        ``"udp"`` or ``"tcp"``.
    log : list of (time, direction, kind, size, addr)
        Every datagram: loop time (s), ``"tx"``/``"rx"``, :func:`classify_datagram`
        kind, UDP payload size in bytes, and the peer's (host, port).
    rtp : dict
        ``(direction, ssrc, sequence number) -> loop time`` of the first RTP datagram so
        seen (SRTP leaves the RTP header in clear text): per-packet send and arrival
        times on the wire, for a turn's breakdown.
    closed : bool
    """

    local_addr: tuple
    remote_addr: tuple | None = None
    kind: str = "udp"
    log: list = field(default_factory=list)
    rtp: dict = field(default_factory=dict)
    closed: bool = False

    def note(self, t: float, direction: str, data: bytes, addr: Any) -> None:
        """Log one datagram (and, for RTP, its sequence number's time)."""
        kind = classify_datagram(data)
        self.log.append((t, direction, kind, len(data), addr))
        if kind == "rtp" and len(data) >= 12 and len(self.rtp) < 1_000_000:
            key = (direction, int.from_bytes(data[8:12], "big"), int.from_bytes(data[2:4], "big"))
            self.rtp.setdefault(key, t)

    def wire_bits(self, *, direction: str = "tx", kinds: Sequence[str] = ("rtp",), start: float = -np.inf,
                  end: float = np.inf, ip_udp_overhead: int = 28) -> tuple[int, int]:
        """(bits including IP/UDP headers, datagram count) of matching traffic in ``[start, end)``.

        Parameters
        ----------
        direction : {"tx", "rx"}
        kinds : sequence of str
            Datagram kinds to count.
        start, end : float
            Loop-time window in seconds.
        ip_udp_overhead : int
            Header bytes added per datagram (IPv4 20 + UDP 8 = 28).
        """
        bits = n = 0
        for t, d, k, size, _addr in self.log:
            if d == direction and k in kinds and start <= t < end:
                bits += (size + ip_udp_overhead) * 8
                n += 1
        return bits, n


class _CountingTransport(asyncio.DatagramTransport):
    """Wraps the interface's datagram transport; logs every datagram sent."""

    def __init__(self, inner: Any, record: SocketRecord, clock: Callable[[], float]) -> None:
        super().__init__()
        self._inner = inner
        self._record = record
        self._clock = clock

    def sendto(self, data: bytes, addr: Any = None) -> None:  # noqa: D102
        self._inner.sendto(data, addr)
        peer = tuple(addr[:2]) if addr is not None else self._record.remote_addr
        self._record.note(self._clock(), "tx", data, peer)

    def close(self) -> None:  # noqa: D102
        self._record.closed = True
        self._inner.close()

    def abort(self) -> None:  # noqa: D102
        self._record.closed = True
        abort = getattr(self._inner, "abort", None)
        (abort or self._inner.close)()

    def is_closing(self) -> bool:  # noqa: D102
        return self._inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:  # noqa: D102
        return self._inner.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:  # noqa: D102
        fn = getattr(self._inner, "get_write_buffer_size", None)
        return fn() if fn is not None else 0


class _CountingProtocol(asyncio.DatagramProtocol):
    """Sits between the interface's transport and aioice's protocol."""

    def __init__(self, inner: Any, record: SocketRecord, clock: Callable[[], float]) -> None:
        self.inner = inner
        self.record = record
        self.clock = clock
        self.wrapped: _CountingTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.wrapped = _CountingTransport(transport, self.record, self.clock)
        self.inner.connection_made(self.wrapped)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.record.note(self.clock(), "rx", data, tuple(addr[:2]) if addr else None)
        self.inner.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.inner.error_received(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.record.closed = True
        self.inner.connection_lost(exc)


# ---------------------------------------------------------------------------------------
# The scope: host addresses and sockets answered by the peer's network interface
# ---------------------------------------------------------------------------------------


@dataclass
class _Scope:
    iface: Any
    sockets: list


_SCOPE: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("voicelab_webrtc_ice_scope", default=None)
_LOCK = threading.Lock()
_HOST_COUNT = 0
_LOOP_PATCHES: dict[int, list] = {}  # id(loop) -> [loop, count]


def _scoped_get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """Replacement of ``aioice.ice.get_host_addresses`` while a scope exists."""
    scope = _SCOPE.get()
    if scope is None:
        return _ORIGINAL_GET_HOST_ADDRESSES(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    out = []
    for a in scope.iface.host_addresses():
        try:
            version = ipaddress.ip_address(str(a).split("%", 1)[0]).version
        except ValueError:
            continue
        if (version == 4 and use_ipv4) or (version == 6 and use_ipv6):
            out.append(str(a))
    return out


def _make_routed(loop: asyncio.AbstractEventLoop) -> tuple[Callable, Callable]:
    orig_dgram = loop.create_datagram_endpoint
    orig_conn = loop.create_connection

    async def create_datagram_endpoint(protocol_factory, local_addr=None, remote_addr=None, **kwargs):
        scope = _SCOPE.get()
        if scope is None or any(v is not None for v in kwargs.values()):
            # outside a scope, or an option the interface does not model (mDNS passes
            # its own multicast socket): the loop's own method
            return await orig_dgram(protocol_factory, local_addr=local_addr, remote_addr=remote_addr, **kwargs)
        iface = scope.iface
        clock = iface.time
        holder: dict[str, Any] = {}

        def factory():
            inner = protocol_factory()
            rec = SocketRecord(local_addr=("?", 0), remote_addr=tuple(remote_addr) if remote_addr else None)
            shim = _CountingProtocol(inner, rec, clock)
            holder["shim"] = shim
            return shim

        token = _SCOPE.set(None)  # the interface may itself call the loop: no recursion
        try:
            _transport, _ = await iface.create_datagram_endpoint(factory, local_addr=local_addr, remote_addr=remote_addr)
        finally:
            _SCOPE.reset(token)
        shim = holder["shim"]
        shim.record.local_addr = tuple(shim.wrapped.get_extra_info("sockname")[:2])
        scope.sockets.append(shim.record)
        return shim.wrapped, shim.inner

    async def create_connection(protocol_factory, host=None, port=None, *, ssl=None, **kwargs):
        scope = _SCOPE.get()
        if scope is None or any(v is not None for k, v in kwargs.items() if k != "server_hostname"):
            return await orig_conn(protocol_factory, host, port, ssl=ssl, **kwargs)
        if ssl is True:
            ssl = _ssl.create_default_context()
        token = _SCOPE.set(None)
        try:
            transport, protocol = await scope.iface.create_connection(
                protocol_factory, host, port, ssl=ssl or None, server_hostname=kwargs.get("server_hostname"))
        finally:
            _SCOPE.reset(token)
        sockname = transport.get_extra_info("sockname")
        scope.sockets.append(SocketRecord(local_addr=tuple(sockname[:2]) if sockname else ("?", 0),
                                          remote_addr=(host, port), kind="tcp"))
        return transport, protocol

    return create_datagram_endpoint, create_connection


def _install(loop: asyncio.AbstractEventLoop) -> None:
    global _HOST_COUNT
    with _LOCK:
        if _HOST_COUNT == 0:
            _aioice_ice.get_host_addresses = _scoped_get_host_addresses
        _HOST_COUNT += 1
        entry = _LOOP_PATCHES.get(id(loop))
        if entry is None:
            dgram, conn = _make_routed(loop)
            try:
                loop.create_datagram_endpoint = dgram  # type: ignore[method-assign]
                loop.create_connection = conn  # type: ignore[method-assign]
            except AttributeError:  # a loop without instance attributes (e.g. uvloop)
                _HOST_COUNT -= 1
                if _HOST_COUNT == 0:
                    _aioice_ice.get_host_addresses = _ORIGINAL_GET_HOST_ADDRESSES
                raise VoicelabError(
                    f"{type(loop).__name__} does not allow routing aioice's sockets through a network "
                    "interface; run the lab's WebRTC peers on asyncio's default event loop"
                ) from None
            _LOOP_PATCHES[id(loop)] = [loop, 1]
        else:
            entry[1] += 1


def _uninstall(loop: asyncio.AbstractEventLoop) -> None:
    global _HOST_COUNT
    with _LOCK:
        _HOST_COUNT -= 1
        if _HOST_COUNT == 0:
            _aioice_ice.get_host_addresses = _ORIGINAL_GET_HOST_ADDRESSES
        entry = _LOOP_PATCHES.get(id(loop))
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                del _LOOP_PATCHES[id(loop)]
                for name in ("create_datagram_endpoint", "create_connection"):
                    vars(loop).pop(name, None)


@contextlib.contextmanager
def ice_scope(iface: Any, *, sockets: list | None = None) -> Iterator[list]:
    """Within this block (in the current task and tasks it starts), aioice uses ``iface``.

    Host candidates are ``iface.host_addresses()`` (loopback included) and every UDP
    endpoint / TCP connection aioice opens goes through ``iface``. Must be entered
    inside a running event loop. Nested and concurrent scopes are allowed; the
    replacements are removed when the last one ends.

    Parameters
    ----------
    iface : voicelab.net.iface.NetworkInterface
    sockets : list, optional
        :class:`SocketRecord` of each endpoint opened in the scope are appended here.

    Yields
    ------
    list
        ``sockets`` (a new list when not given).
    """
    loop = asyncio.get_running_loop()
    out = sockets if sockets is not None else []
    _install(loop)
    token = _SCOPE.set(_Scope(iface, out))
    try:
        yield out
    finally:
        _SCOPE.reset(token)
        _uninstall(loop)


def patches_active(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """True while any replacement installed by :func:`ice_scope` is in place.

    Parameters
    ----------
    loop : asyncio.AbstractEventLoop, optional
        Also check this loop for routed socket methods (default: the running loop, if any).
    """
    if _aioice_ice.get_host_addresses is not _ORIGINAL_GET_HOST_ADDRESSES:
        return True
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
    if loop is not None and ("create_datagram_endpoint" in vars(loop) or "create_connection" in vars(loop)):
        return True
    return bool(_LOOP_PATCHES)


# ---------------------------------------------------------------------------------------
# Codecs: the lab's encoder behind aiortc's Encoder interface
# ---------------------------------------------------------------------------------------


def _frame_to_mono_int16(frame: Any) -> np.ndarray:
    """Samples of a packed/planar s16 ``av.AudioFrame`` as mono int16 (first channel)."""
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        return np.ascontiguousarray(arr[0], dtype=np.int16)
    flat = arr.reshape(-1)
    if channels > 1:
        flat = flat.reshape(-1, channels)[:, 0]
    return np.ascontiguousarray(flat, dtype=np.int16)


def audio_level_dbov(frame: Any) -> int:
    """RFC 6465 Appendix A audio level (dBov, -127..0) of an s16 ``av.AudioFrame``.

    The same figure as ``aiortc.rtp.compute_audio_level_dbov`` (which loops over the
    samples in Python), computed with numpy.
    """
    buf = bytes(frame.planes[0])
    a = np.frombuffer(buf[: len(buf) - len(buf) % 2], dtype=np.int16).astype(np.int64)
    energy = float(np.dot(a, a))
    rms = np.sqrt(energy / (frame.samples * 32767.0 * 32767.0))
    if rms <= 0:
        return -127
    return round(min(max(20.0 * np.log10(rms), -127.0), 0.0))


class LabEncoder(_AiortcEncoder):
    """aiortc ``Encoder`` that encodes with a :mod:`voicelab.codecs` object.

    Input frames (``av.AudioFrame``) at the codec's rate in s16 are used as they are;
    any other rate/format goes through PyAV's resampler. One RTP payload is returned per
    ``codec.frame_ms`` of audio, with RTP timestamps counted in the codec's clock
    (``timestamp_increment`` per frame): feed frames of ``codec.frame_ms`` (as
    :class:`~voicelab.webrtc.media.SourceTrack` does) so that every call yields one
    payload.

    Parameters
    ----------
    codec : voicelab.codecs.Codec
        The encoder (its decoder half is unused).

    Attributes
    ----------
    frames_encoded : int
    frames_suppressed : int
        DTX frames (payload <= 2 bytes) not sent.
    """

    def __init__(self, codec: Any) -> None:
        self.codec = codec
        self._buf = np.zeros(0, dtype=np.int16)
        self._n = 0
        self._resampler: Any = None
        self.frames_encoded = 0
        self.frames_suppressed = 0

    def _pcm(self, frame: Any) -> np.ndarray:
        if (frame.format.name in ("s16", "s16p") and frame.sample_rate == self.codec.sample_rate):
            return _frame_to_mono_int16(frame)
        if self._resampler is None:
            import av

            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self.codec.sample_rate)
        parts = [_frame_to_mono_int16(f) for f in self._resampler.resample(frame)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int | None]:
        """Encode one frame; returns ``([payload], rtp_timestamp_offset)`` or ``([], None)``."""
        self._buf = np.concatenate([self._buf, self._pcm(frame)])
        F = self.codec.frame_samples
        if len(self._buf) < F:
            return [], None
        chunk, self._buf = self._buf[:F], self._buf[F:]
        ts = self._n * self.codec.timestamp_increment
        self._n += 1
        payload = self.codec.encode(chunk)
        if getattr(self.codec, "dtx", False) and len(payload) <= 2:
            self.frames_suppressed += 1
            return [], None
        self.frames_encoded += 1
        return [payload], ts

    def pack(self, packet: Any) -> tuple[list[bytes], int]:
        """A pre-encoded payload (``av.Packet`` of this codec, ``pts`` in RTP clock units), sent as it is.

        What a pass-through bridge's track returns (:mod:`voicelab.gateway`): aiortc calls
        ``pack`` instead of ``encode`` for packets.
        """
        payload = bytes(packet)
        if not payload:
            return [], None  # type: ignore[return-value]
        self.frames_encoded += 1
        return [payload], int(packet.pts or 0)


def _lab_codec_name(aiortc_codec: Any) -> str:
    name = _BY_MIME.get(str(aiortc_codec.mimeType).lower())
    if name is None:
        raise CodecError(f"negotiated codec {aiortc_codec.mimeType} has no lab equivalent; use one of {sorted(WEBRTC_CODECS)}")
    return name


# ---------------------------------------------------------------------------------------
# Receive side: the lab's jitter buffer + PLC on the loop clock
# ---------------------------------------------------------------------------------------


@dataclass
class MediaConfig:
    """How a ``mode="lab"`` peer encodes and plays audio.

    Parameters
    ----------
    codec : str
        The lab codec the experiment varies (``"opus"``, ``"pcmu"``, ``"pcma"``,
        ``"g722"``); ``codec_params`` apply when this codec is negotiated.
    codec_params : dict
        Keyword arguments for :func:`voicelab.codecs.get` (Opus: ``bitrate``, ``fec``,
        ``dtx``, ``packet_loss_perc``, ...).
    jitter_buffer : str
        ``"fixed:MS"``, ``"adaptive"`` or ``"auto"`` (self-sizing; see
        :func:`voicelab.rtp.jitterbuffer.parse_jitter_buffer`).
    plc : bool
        Conceal lost frames (else silence).
    fec : bool
        Rebuild lost frames from the next packet's in-band FEC when possible.
    forward_to_track : bool
        Also hand played frames to the receiver's track (bounded queue).
    sink : voicelab.webrtc.media.AudioSink, optional
        Where the receiver's playout records (default: a new sink at the negotiated
        codec's rate, reachable as ``receiver.lab_playout.sink``). Its rate must be the
        codec's.
    encode_inline : bool
        Run the lab's encoder on the event loop instead of aiortc's thread pool (one
        thread hop less per packet; see :meth:`LabRtpSender._next_encoded_frame`).
    """

    codec: str = "opus"
    codec_params: dict = field(default_factory=dict)
    jitter_buffer: str = "fixed:60"
    plc: bool = True
    fec: bool = False
    forward_to_track: bool = True
    sink: Any = None
    encode_inline: bool = False

    def make_codec(self, name: str) -> Any:
        """A fresh lab codec object for the negotiated codec ``name``."""
        params = dict(self.codec_params) if name == self.codec else {}
        return _codecs.get(name, **params)


class LabPlayout:
    """Jitter buffer + decoder + PLC for one received stream, played on the loop clock.

    Packets are pushed as they arrive (stamped with ``loop.time()``); from the buffer's
    start time a timer plays one slot every ``frame_ms``: the buffer decides, and
    :func:`~voicelab.rtp.playout.render` decodes, rebuilds (FEC) or conceals. Each
    played frame is written to :attr:`sink` at its slot time.

    Parameters
    ----------
    codec : voicelab.codecs.Codec
        The decoder.
    jitter_buffer : str
    plc, fec : bool
    sink : voicelab.webrtc.media.AudioSink, optional
        Default: a new one at the codec's rate.
    track : aiortc RemoteStreamTrack, optional
        Also receives each played frame as an ``av.AudioFrame`` (queue kept at most
        ``track_queue_max`` frames by dropping the oldest).
    """

    def __init__(self, codec: Any, *, jitter_buffer: str = "fixed:60", plc: bool = True, fec: bool = False,
                 sink: Any = None, track: Any = None, track_queue_max: int = 50, tap_codec: Any = None) -> None:
        from ..rtp.jitterbuffer import parse_jitter_buffer
        from .media import AudioSink

        self.rx = codec
        kind, params = parse_jitter_buffer(jitter_buffer)
        cls = FixedJitterBuffer if kind == "fixed" else AdaptiveJitterBuffer
        self.jb = cls(frame_ms=codec.frame_ms, clock_rate=codec.clock_rate, timestamp_increment=codec.timestamp_increment, **params)
        self.plc, self.fec = bool(plc), bool(fec)
        self.dtx = bool(getattr(codec, "dtx", False))
        if sink is not None and sink.sample_rate != codec.sample_rate:
            raise ParameterError(f"playout sink records at {sink.sample_rate} Hz but the {codec.name} decoder gives "
                                 f"{codec.sample_rate} Hz; make the sink at the codec's rate")
        self.sink = sink if sink is not None else AudioSink(codec.sample_rate)
        self.track = track
        self.track_queue_max = int(track_queue_max)
        self.outcomes: dict[str, int] = {}
        self.packets = 0
        self.foreign_packets = 0
        self.first_arrival: float | None = None
        #: (loop arrival time, RTP timestamp) of every packet of the stream, in arrival order
        self.arrivals: list[tuple[float, int]] = []
        #: (RTP timestamp, buffering delay in ms) of every played frame, in playout order
        self.delays: list[tuple[int, float]] = []
        self.payload_type: int | None = None
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._start: float | None = None
        self._k = 0
        self._closed = False
        #: with ``tap_codec`` and a sink that has ``on_tapped(frames)``: the packets as they
        #: arrive, decoded in sequence order by an :class:`~voicelab.rtp.tap.ArrivalTap`
        #: (what a voice agent's recogniser listens to; the playout is unchanged)
        self.tap = None
        self.tapped_at: dict[int, float] = {}
        #: RTP sequence number -> the playout slot (loop time) that played it
        self.played_at: dict[int, float] = {}
        if tap_codec is not None and callable(getattr(self.sink, "on_tapped", None)):
            from ..rtp.tap import ArrivalTap

            self.tap = ArrivalTap(tap_codec, plc=self.plc)

    # -- input -------------------------------------------------------------------------
    def push(self, packet: Any) -> None:
        """Hand over one aiortc ``RtpPacket`` (after SRTP and depayloading)."""
        if self._closed:
            return
        now = self._loop.time()
        if self.payload_type is None:
            self.payload_type = packet.payload_type
        elif packet.payload_type != self.payload_type:
            self.foreign_packets += 1
            return
        self.packets += 1
        if self.first_arrival is None:
            self.first_arrival = now
        self.arrivals.append((now, int(packet.timestamp)))
        tap = getattr(self.sink, "on_packet", None)  # a pass-through bridge forwards the payload as it is
        if tap is not None:
            tap(bytes(packet.payload), now, bool(packet.marker))
        if self.tap is not None:
            frames = self.tap.push(packet.sequence_number, bytes(packet.payload), now)
            for f in frames:
                if f.seq is not None:
                    self.tapped_at.setdefault(f.seq, f.t)
            if frames:
                self.sink.on_tapped(frames)
        p = RtpPacket(marker=bool(packet.marker), payload_type=packet.payload_type, sequence_number=packet.sequence_number,
                      timestamp=packet.timestamp, ssrc=packet.ssrc, payload=bytes(packet.payload))
        self.jb.push(p, now)
        if self._start is None and self.jb.start_time() is not None:
            self._start = self.jb.start_time()
            self._arm()

    # -- playout -----------------------------------------------------------------------
    def _arm(self) -> None:
        when = self._start + self._k * self.rx.frame_ms / 1000.0  # type: ignore[operator]
        self._handle = self._loop.call_at(when, self._play, when)

    def _play(self, when: float) -> None:
        self._handle = None
        if self._closed:
            return
        p = self.jb.pop(when)
        if p.kind in ("frame", "skip") and p.timestamp is not None:
            self.delays.append((int(p.timestamp), float(p.delay_ms)))
        frame, outcome = render(p, self.rx, plc=self.plc, fec=self.fec, dtx=bool(self.dtx and p.kind == "lost" and p.dtx))
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if p.kind in ("frame", "skip") and p.sequence_number is not None:
            self.played_at.setdefault(int(p.sequence_number), when)
        self.sink.write(frame, when)
        if self.track is not None:
            self._forward(frame)
        self._k += 1
        self._arm()

    def _forward(self, frame: np.ndarray) -> None:
        import fractions

        import av

        q = getattr(self.track, "_queue", None)
        if q is None:
            return
        af = av.AudioFrame.from_ndarray(np.asarray(frame, dtype=np.int16).reshape(1, -1), format="s16", layout="mono")
        af.sample_rate = self.rx.sample_rate
        af.pts = self._k * self.rx.frame_samples
        af.time_base = fractions.Fraction(1, self.rx.sample_rate)
        while q.qsize() >= self.track_queue_max:
            q.get_nowait()
        q.put_nowait(af)

    def close(self) -> None:
        """Stop the playout timer."""
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @property
    def start_time(self) -> float | None:
        """Loop time of the first playout slot (None before any packet)."""
        return self._start


class _JitterTap:
    """Stands in for aiortc's ``JitterBuffer``: every packet goes to the lab's playout."""

    def __init__(self, playout: LabPlayout) -> None:
        self.playout = playout

    def add(self, packet: Any) -> tuple[bool, None]:
        self.playout.push(packet)
        return False, None  # nothing for aiortc's decoder thread, no PLI


def _check_private(obj: Any, name: str) -> None:
    if not hasattr(obj, name):
        raise VoicelabError(
            f"aiortc {type(obj).__mro__[1].__name__} has no attribute {name}: this aiortc version changed the seam "
            "voicelab.webrtc.peer plugs into (docs/webrtc.md, \"The seams used\"); install the aiortc version pyproject.toml pins"
        )


class LabRtpSender(RTCRtpSender):
    """aiortc's sender with the lab's encoder (swapped onto a peer's sender object)."""

    _lab_media: MediaConfig
    lab_encoder: LabEncoder | None = None

    async def send(self, parameters: Any) -> None:  # noqa: D102 - see RTCRtpSender.send
        if self.lab_encoder is None and parameters.codecs:
            _check_private(self, "_RTCRtpSender__encoder")
            name = _lab_codec_name(parameters.codecs[0])
            self.lab_encoder = LabEncoder(self._lab_media.make_codec(name))
            self._RTCRtpSender__encoder = self.lab_encoder  # type: ignore[attr-defined]
        await super().send(parameters)

    async def _next_encoded_frame(self, codec: Any) -> Any:
        """As aiortc's, but with ``MediaConfig.encode_inline`` the lab's encoder runs on the loop.

        aiortc hands every frame to the default thread pool (``run_in_executor``), one
        thread hop per packet; with 10 ms frames that is 100 hops a second per call.
        Encoding one Opus frame takes well under a millisecond, so running it inline
        saves the hop's CPU and its scheduling delay.
        """
        if not (self._lab_media.encode_inline and self.lab_encoder is not None):
            return await super()._next_encoded_frame(codec)
        _check_private(self, "_RTCRtpSender__track")
        data = await self._RTCRtpSender__track.recv()  # type: ignore[attr-defined]
        if not self._enabled:
            return None
        from av import AudioFrame
        from av.frame import Frame

        audio_level = None
        if isinstance(data, Frame):
            if isinstance(data, AudioFrame):
                audio_level = audio_level_dbov(data)
            payloads, timestamp = self.lab_encoder.encode(data)
        else:
            payloads, timestamp = self.lab_encoder.pack(data)
        if not payloads:
            return None
        return RTCEncodedFrame(payloads, timestamp, audio_level)


class LabRtpReceiver(RTCRtpReceiver):
    """aiortc's receiver with the lab's jitter buffer, PLC and loop-clock playout."""

    _lab_media: MediaConfig
    lab_playout: LabPlayout | None = None

    async def receive(self, parameters: Any) -> None:  # noqa: D102 - see RTCRtpReceiver.receive
        await super().receive(parameters)
        if self.lab_playout is None:
            audio = [c for c in parameters.codecs if str(c.mimeType).lower() in _BY_MIME]
            if not audio:
                return
            _check_private(self, "_RTCRtpReceiver__jitter_buffer")
            m = self._lab_media
            self.lab_playout = LabPlayout(m.make_codec(_lab_codec_name(audio[0])), jitter_buffer=m.jitter_buffer,
                                          plc=m.plc, fec=m.fec, sink=m.sink,
                                          track=self._track if m.forward_to_track else None,
                                          tap_codec=m.make_codec(_lab_codec_name(audio[0]))
                                          if callable(getattr(m.sink, "on_tapped", None)) else None)  # fmt: skip
            self._RTCRtpReceiver__jitter_buffer = _JitterTap(self.lab_playout)  # type: ignore[attr-defined]

    async def stop(self) -> None:  # noqa: D102
        if self.lab_playout is not None:
            self.lab_playout.close()
        await super().stop()


# ---------------------------------------------------------------------------------------
# The peer connection
# ---------------------------------------------------------------------------------------


class LabPeerConnection(RTCPeerConnection):
    """An ``RTCPeerConnection`` bound to a network interface (see the module docstring).

    Made by :func:`make_peer_connection`. Extra attributes:

    Attributes
    ----------
    iface : NetworkInterface
    media : MediaConfig or None
        None in ``"aiortc-defaults"`` mode.
    sockets : list of SocketRecord
        Every endpoint aioice opened for this peer.
    timeline : list of (float, str)
        Loop time and event: ``gather:gathering``, ``gather:completed``,
        ``ice:checking``, ``ice:completed``, ``dtls:connecting``, ``dtls:connected``,
        ``connection:connected``, ... in order.
    """

    def __init__(self, iface: Any, configuration: RTCConfiguration, *, media: MediaConfig | None = None) -> None:
        super().__init__(configuration)
        self.iface = iface
        self.media = media
        self.sockets: list[SocketRecord] = []
        self.timeline: list[tuple[float, str]] = []
        self._watched: set[int] = set()
        self._connected_waiters: list[asyncio.Future] = []
        self.on("connectionstatechange", self._on_connection_state)

    @property
    def mode(self) -> str:
        """``"lab"`` or ``"aiortc-defaults"``."""
        return "lab" if self.media is not None else "aiortc-defaults"

    def _mark(self, event: str) -> None:
        self.timeline.append((self.iface.time(), event))

    def _on_connection_state(self) -> None:
        state = self.connectionState
        self._mark(f"connection:{state}")
        if state in ("connected", "failed", "closed"):
            waiters, self._connected_waiters = self._connected_waiters, []
            for fut in waiters:
                if fut.done():
                    continue
                if state == "connected":
                    fut.set_result(self.iface.time())
                else:
                    fut.set_exception(VoicelabError(f"the WebRTC connection is {state} (ICE or DTLS did not complete)"))

    def connected(self) -> asyncio.Future:
        """A future resolved with the loop time at which the connection is ``connected``.

        It fails with :class:`~voicelab.errors.VoicelabError` if the connection fails or
        closes first.
        """
        fut = asyncio.get_running_loop().create_future()
        if self.connectionState == "connected":
            fut.set_result(self.event_time("connection:connected") or self.iface.time())
        elif self.connectionState in ("failed", "closed"):
            fut.set_exception(VoicelabError(f"the WebRTC connection is {self.connectionState}"))
        else:
            self._connected_waiters.append(fut)
        return fut

    def _adopt(self) -> None:
        """Swap in the lab's sender/receiver and watch transport states (idempotent)."""
        for t in self.getTransceivers():
            if self.media is not None:
                if not isinstance(t.sender, LabRtpSender):
                    t.sender.__class__ = LabRtpSender
                    t.sender._lab_media = self.media  # type: ignore[attr-defined]
                if not isinstance(t.receiver, LabRtpReceiver):
                    t.receiver.__class__ = LabRtpReceiver
                    t.receiver._lab_media = self.media  # type: ignore[attr-defined]
            dtls = t.receiver.transport
            ice = dtls.transport
            for obj, prefix in ((ice.iceGatherer, "gather"), (ice, "ice"), (dtls, "dtls")):
                if id(obj) not in self._watched:
                    self._watched.add(id(obj))
                    obj.on("statechange", lambda o=obj, p=prefix: self._mark(f"{p}:{o.state}"))

    def addTrack(self, track: Any) -> Any:  # noqa: D102
        sender = super().addTrack(track)
        self._adopt()
        return sender

    def addTransceiver(self, trackOrKind: Any, direction: str = "sendrecv") -> Any:  # noqa: D102
        t = super().addTransceiver(trackOrKind, direction)
        self._adopt()
        return t

    async def setLocalDescription(self, sessionDescription: Any = None) -> None:
        """As aiortc's, gathering through :attr:`iface`; a cancelled call waits for gathering.

        aioice does not cancel its STUN/TURN gathering tasks when the gathering
        coroutine is cancelled (``aioice/ice.py`` ~1190: ``asyncio.wait(tasks,
        timeout=5)``), so they would outlive the peer. A cancellation therefore lets
        gathering end (at most aioice's 5 s timeout) before it is re-raised.
        """
        self._adopt()
        with ice_scope(self.iface, sockets=self.sockets):
            task = asyncio.ensure_future(super().setLocalDescription(sessionDescription))
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                await asyncio.wait([task])
                if not task.cancelled():
                    task.exception()  # retrieved; the cancellation is what the caller sees
                raise
        self._adopt()

    async def setRemoteDescription(self, sessionDescription: Any) -> None:  # noqa: D102
        with ice_scope(self.iface, sockets=self.sockets):
            await super().setRemoteDescription(sessionDescription)
        self._adopt()

    def event_time(self, event: str) -> float | None:
        """Loop time of the first ``event`` in :attr:`timeline`, or None."""
        for t, e in self.timeline:
            if e == event:
                return t
        return None


def _ice_server(entry: Any) -> RTCIceServer:
    if isinstance(entry, RTCIceServer):
        server = entry
    elif isinstance(entry, str):
        server = RTCIceServer(urls=entry)
    elif isinstance(entry, dict) and "urls" in entry:
        server = RTCIceServer(urls=entry["urls"], username=entry.get("username"), credential=entry.get("credential"))
    else:
        raise ParameterError(f"ice server must be a URL string, a dict with 'urls' or an RTCIceServer, got {entry!r}")
    urls = server.urls if isinstance(server.urls, list) else [server.urls]
    for url in urls:
        try:
            parsed = parse_stun_turn_uri(str(url))
        except ValueError as exc:
            raise ParameterError(f"ice server URL {url!r} is malformed ({exc}); e.g. 'stun:127.0.0.1:3478' or "
                                 "'turn:127.0.0.1:3478?transport=udp'") from None
        try:
            ipaddress.ip_address(parsed["host"])
        except ValueError:
            raise ParameterError(f"ice server host {parsed['host']!r} in {url!r} is not an IP literal; the lab never "
                                 "resolves names (give e.g. 127.0.0.1)") from None
        if parsed["scheme"] in ("turn", "turns") and not server.username:
            raise ParameterError(f"TURN server {url!r} needs a username and credential")
    return server


def make_peer_connection(
    iface: Any,
    *,
    ice_servers: Sequence[Any] = (),
    relay_only: bool = False,
    mode: str = "lab",
    codec: str = "opus",
    codec_params: dict | None = None,
    jitter_buffer: str = "fixed:60",
    plc: bool = True,
    fec: bool = False,
    forward_to_track: bool = True,
    sink: Any = None,
    encode_inline: bool = False,
) -> LabPeerConnection:
    """An aiortc peer that is offline by default, on ``iface``, with the lab's media.

    Parameters
    ----------
    iface : voicelab.net.iface.NetworkInterface
        Opens every socket and answers the host addresses for ICE.
    ice_servers : sequence
        STUN/TURN servers: URL strings (``"stun:127.0.0.1:3478"``), dicts with
        ``urls``/``username``/``credential`` or ``RTCIceServer``. Hosts must be IP
        literals. Empty (default): no server is contacted.
    relay_only : bool
        ICE transport policy ``relay`` (needs a TURN server).
    mode : {"lab", "aiortc-defaults"}
    codec, codec_params, jitter_buffer, plc, fec, forward_to_track, sink, encode_inline
        The lab's media (``mode="lab"`` only); see :class:`MediaConfig`. Which codec
        is negotiated is set with :func:`prefer_codec` on the transceiver.

    Returns
    -------
    LabPeerConnection

    Raises
    ------
    ParameterError
        Unknown mode or codec, malformed or named (non-IP) server, relay-only without TURN.
    """
    if mode not in MODES:
        raise ParameterError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(ice_servers, (str, dict, RTCIceServer)):
        ice_servers = [ice_servers]
    servers = [_ice_server(s) for s in ice_servers]
    if relay_only and not any(
        str(u).startswith("turn") for s in servers for u in (s.urls if isinstance(s.urls, list) else [s.urls])
    ):
        raise ParameterError("relay_only needs a TURN server in ice_servers (e.g. 'turn:127.0.0.1:3478')")
    config = RTCConfiguration(
        iceServers=servers,
        iceTransportPolicy=RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL,
    )
    media = None
    if mode == "lab":
        if codec not in WEBRTC_CODECS:
            raise ParameterError(f"WebRTC codec must be one of {sorted(WEBRTC_CODECS)}, got {codec!r}")
        media = MediaConfig(codec=codec, codec_params=dict(codec_params or {}), jitter_buffer=jitter_buffer,
                            plc=bool(plc), fec=bool(fec), forward_to_track=bool(forward_to_track), sink=sink,
                            encode_inline=bool(encode_inline))
        media.make_codec(codec)  # fail now on bad codec parameters, not inside aiortc's RTP task
        from ..rtp.jitterbuffer import parse_jitter_buffer

        parse_jitter_buffer(jitter_buffer)
    return LabPeerConnection(iface, config, media=media)


def prefer_codec(transceiver: Any, codec: str) -> None:
    """Offer/accept only ``codec`` on this transceiver (``setCodecPreferences``).

    Parameters
    ----------
    transceiver : aiortc RTCRtpTransceiver
    codec : {"opus", "pcmu", "pcma", "g722"}
    """
    if codec not in WEBRTC_CODECS:
        raise ParameterError(f"WebRTC codec must be one of {sorted(WEBRTC_CODECS)}, got {codec!r}")
    mime = WEBRTC_CODECS[codec].lower()
    caps = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == mime]
    transceiver.setCodecPreferences(caps)


def selected_pair(pc: RTCPeerConnection) -> dict | None:
    """The nominated ICE candidate pair of the first transport, or None.

    Returns
    -------
    dict or None
        ``{"local": {"type", "host", "port"}, "remote": {...}}``.
    """
    for t in pc.getTransceivers():
        conn = t.receiver.transport.transport._connection
        nominated = getattr(conn, "_nominated", None) or {}
        pair = nominated.get(1) or next(iter(nominated.values()), None)
        if pair is None:
            continue
        lc, rc = pair.local_candidate, pair.remote_candidate
        return {
            "local": {"type": lc.type, "host": lc.host, "port": lc.port},
            "remote": {"type": rc.type, "host": rc.host, "port": rc.port},
        }
    return None


def stats_summary(report: Any, *, clock_rate: int) -> dict[str, Any]:
    """Plain numbers from an aiortc ``getStats()`` report (first audio stream of each kind).

    Parameters
    ----------
    report : aiortc RTCStatsReport
    clock_rate : int
        RTP clock rate of the received stream in Hz (to turn ``jitter`` into ms).

    Returns
    -------
    dict
        ``packets_sent``, ``bytes_sent`` (payload octets), ``packets_received``,
        ``packets_lost``, ``jitter_ms`` (aiortc measures arrival on the wall clock),
        ``remote_packets_lost``, ``remote_jitter_ms``, ``fraction_lost``
        (0..1, as the peer reported it), ``rtt_ms`` (None until an RTCP round trip),
        ``transport_bytes_sent`` / ``transport_bytes_received`` (DTLS/SRTP layer).
        Missing figures are None.
    """
    out: dict[str, Any] = {k: None for k in (
        "packets_sent", "bytes_sent", "packets_received", "packets_lost", "jitter_ms", "remote_packets_lost",
        "remote_jitter_ms", "fraction_lost", "rtt_ms", "transport_bytes_sent", "transport_bytes_received")}
    for s in report.values():
        kind = getattr(s, "type", None)
        if kind == "outbound-rtp" and out["packets_sent"] is None:
            out["packets_sent"], out["bytes_sent"] = s.packetsSent, s.bytesSent
        elif kind == "inbound-rtp" and out["packets_received"] is None:
            out["packets_received"], out["packets_lost"] = s.packetsReceived, s.packetsLost
            out["jitter_ms"] = s.jitter * 1000.0 / clock_rate
        elif kind == "remote-inbound-rtp" and out["remote_packets_lost"] is None:
            out["remote_packets_lost"] = s.packetsLost
            out["remote_jitter_ms"] = s.jitter * 1000.0 / clock_rate
            out["fraction_lost"] = s.fractionLost / 256.0 if s.fractionLost is not None else None
            out["rtt_ms"] = s.roundTripTime * 1000.0 if s.roundTripTime is not None else None
        elif kind == "transport" and out["transport_bytes_sent"] is None:
            out["transport_bytes_sent"], out["transport_bytes_received"] = s.bytesSent, s.bytesReceived
    return out
