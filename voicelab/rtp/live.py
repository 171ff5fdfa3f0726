"""A live RTP audio stream on real (or virtual) sockets: the media half of a live call.

A thin asyncio adapter around the sans-IO pieces the offline simulator uses too: the
codec objects, :class:`~voicelab.rtp.session.RtpSession` (RTP/RTCP, statistics, RTT,
latching, SRTP), the jitter buffers and :func:`~voicelab.rtp.playout.render` (decode,
FEC, PLC). It only moves bytes and keeps time:

* the sender is paced on the event loop's clock (``loop.time()``): frame ``k`` of the
  source is captured during ``[t0 + k*frame, t0 + (k+1)*frame)`` and sent at the end of
  that interval; the actual send time is recorded, so pacing error is measured;
* the receiver pushes each packet into the jitter buffer with its arrival time and plays
  one slot every ``frame_ms`` from the buffer's start time; each played frame is written
  into the received recording at the position of its playout time.

Both recordings (what was sent, what was played) are placed on the loop clock, so when
two streams run in one process (the caller and the agent share a clock) the mouth-to-ear
delay of each direction is measured directly by cross-correlating them, not estimated as
half a round trip.

Sockets are opened through a network interface object (anything with the event loop's
``create_datagram_endpoint``), so the same stream runs on loopback or, later, on the
virtual network.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import codecs
from ..audio import to_float, to_int16
from ..errors import ParameterError, VoicelabError
from .jitterbuffer import AdaptiveJitterBuffer, FixedJitterBuffer
from .pacer import MediaPacer, PacerJob, pacer_for
from .playout import render
from .packet import RtpPacket
from .session import RemoteReportReceived, RtpReceived, RtpSession

__all__ = ["LiveAudioStream", "StreamStats", "SAMPLE_BASED_CODECS"]

#: Sample-based codecs (RFC 3551 4.5): a payload may hold any whole number of samples,
#: so a peer's packet time need not be ours (a receiver accepts up to 200 ms).
SAMPLE_BASED_CODECS = ("pcmu", "pcma", "g722", "l16")
#: The longest packet a receiver of a sample-based codec must take (RFC 3551 4.5).
MAX_PACKET_MS = 200.0

#: Linux's per-datagram receive timestamp (``struct timespec``, CLOCK_REALTIME); the
#: socket module does not name it. None elsewhere: datagrams read in the tick are then
#: stamped with the time they are read.
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None)
_TIMESPEC = struct.Struct("@qq")
#: datagrams one stream reads per playout slot at most when reading in the tick (a flood
#: waits in the socket for the next slots rather than holding up the other streams)
_MAX_READS_PER_SLOT = 32
#: a kernel timestamp older than this (s) is not believed (the real-time clock was stepped)
_MAX_STAMP_AGE_S = 5.0
#: datagrams a queue-mode stream keeps queued in the native engine (its ``TXCAP``: 2.56 s of
#: 20 ms frames; Python tops it up at each replay, about twice a second)
_NATIVE_TX_QUEUE = 128
_RTP_HEADER = struct.Struct("!BBHII")



@dataclass
class StreamStats:
    """What one live stream measured.

    Attributes
    ----------
    frames_sent : int
    send_lateness_s : list of float
        Actual minus scheduled send time of every frame (pacing error), seconds.
    outcomes : dict
        Playout slots by outcome (played, concealed, fec, silence, empty).
    """

    frames_sent: int = 0
    send_lateness_s: list = field(default_factory=list)
    outcomes: dict = field(default_factory=dict)
    refused_sends: int = 0  # the network interface refused the destination (not yet latched)
    #: packets of another packet time re-cut into our frames (sample-based codecs, RFC 3551 4.5)
    reframed_packets: int = 0
    #: payloads that were not a whole number of samples, or longer than 200 ms: dropped
    unusable_payloads: int = 0
    #: playout slots whose decoding raised (counted, concealed; the playout goes on)
    playout_errors: int = 0
    last_playout_error: str | None = None

    def pacing_error_ms(self, q: float = 99.0) -> float:
        """Percentile ``q`` of the absolute pacing error, in ms (0 when nothing was sent)."""
        if not self.send_lateness_s:
            return 0.0
        return float(np.percentile(np.abs(self.send_lateness_s), q) * 1000.0)


@functools.lru_cache(maxsize=256)
def _is_ip_literal(host: Any) -> bool:
    """True for an IP address literal (a name would be resolved again on every direct send)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, stream: "LiveAudioStream", kind: str | None = None) -> None:
        self.stream = stream
        self.kind = kind  # None: the RTP socket (RTCP too when muxed); "rtcp": port + 1
        self.transport: asyncio.DatagramTransport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        self.stream._on_datagram(data, addr, self.kind)

    def error_received(self, exc) -> None:  # type: ignore[override]
        self.stream.socket_errors += 1  # e.g. ICMP port unreachable before the peer is up

    def connection_lost(self, exc) -> None:  # type: ignore[override]
        if not self.closed.done():
            self.closed.set_result(None)


class LiveAudioStream:
    """Send one audio source and play what arrives, over RTP.

    Parameters
    ----------
    iface : network interface
        Opens the UDP socket (``create_datagram_endpoint`` like the event loop's).
    codec : str
        Codec registry name; ``codec_params`` as for :func:`voicelab.codecs.get`.
    local_addr : (host, port)
        Where to bind (port 0: any free port; read :attr:`local_address`).
    remote_addr : (host, port) or None
        Where to send; with ``latching`` it follows the source of incoming media.
    payload_type : int, optional
        RTP payload type (default: the codec's static one, else 96).
    jitter_buffer : str
        ``"fixed:MS"`` or ``"adaptive"``, as in the simulator.
    plc, fec : bool
        Concealment and FEC use on the receive side, as in the simulator.
    latching : bool
        Symmetric RTP ("comedia"): send to wherever the peer's media comes from.
    latch_hosts : iterable of str, optional
        With ``latching``, latch only to media from these hosts (the SDP's and the
        signalling peer's); other sources are dropped and counted
        (:attr:`foreign_packets`). None: latch to any source.
    source_filter : bool
        Without latching, accept media only from the host of ``remote_addr`` (default);
        False accepts any source (see :class:`~voicelab.rtp.session.RtpSession`).
    seed : int
        Seed of the RTP initial values (SSRC, sequence, timestamp) and RTCP timing.
    srtp : voicelab.rtp.srtp.SrtpContext, optional
    cname : str
        RTCP canonical name.
    rtcp_mux : bool
        RTCP on the RTP port (RFC 5761). Without it, RTCP is sent to
        ``remote_rtcp_addr`` (default: the RTP port + 1) from a second socket bound to
        our RTP port + 1 (RFC 3550 11), where the peer's RTCP is received too; if that
        port is taken, RTCP is sent from the RTP socket and ``rtcp_port_error`` says why.
    remote_rtcp_addr : (host, port), optional
    capture : list, optional
        Every datagram sent or received is appended as ``(time, src, dst, bytes)``
        (what a capture on this host would show; see :mod:`voicelab.net.pcap`).
    """

    def __init__(
        self,
        iface: Any,
        *,
        codec: str,
        codec_params: dict | None = None,
        local_addr: tuple[str, int] = ("127.0.0.1", 0),
        remote_addr: tuple[str, int] | None = None,
        payload_type: int | None = None,
        jitter_buffer: str = "fixed:60",
        plc: bool = True,
        fec: bool = False,
        latching: bool = False,
        source_filter: bool = True,
        seed: int = 0,
        srtp: Any = None,
        cname: str = "voicelab",
        capture: list | None = None,
        rtcp_mux: bool = True,
        remote_rtcp_addr: tuple[str, int] | None = None,
        track: bool = False,
        latch_hosts: Any = None,
    ) -> None:
        from .jitterbuffer import parse_jitter_buffer

        params = dict(codec_params or {})
        self._codec_spec = (codec, params)
        self.tx = codecs.get(codec, **params)
        self.rx = codecs.get(codec, **params)
        self.iface = iface
        self.local_addr = local_addr
        self.payload_type = payload_type if payload_type is not None else (
            self.tx.payload_type if self.tx.payload_type is not None else 96
        )
        kind, jb_params = parse_jitter_buffer(jitter_buffer)
        cls = FixedJitterBuffer if kind == "fixed" else AdaptiveJitterBuffer
        self.jb = cls(frame_ms=self.tx.frame_ms, clock_rate=self.tx.clock_rate, timestamp_increment=self.tx.timestamp_increment, **jb_params)
        self.plc, self.fec = bool(plc), bool(fec)
        self.session_args = dict(
            payload_type=self.payload_type, clock_rate=self.tx.clock_rate, timestamp_increment=self.tx.timestamp_increment,
            cname=cname, rng=np.random.default_rng(seed), remote_addr=remote_addr, latching=latching, source_filter=source_filter, srtp=srtp,
            bitrate=float(self.tx.bitrate), rtcp_mux=bool(rtcp_mux), remote_rtcp_addr=remote_rtcp_addr,
            latch_hosts=latch_hosts,
        )
        self.session: RtpSession | None = None
        self.capture = capture
        self.stats = StreamStats()
        self.socket_errors = 0
        #: loop time of the last RTP or RTCP packet accepted from the peer (None: none yet)
        self.last_received_at: float | None = None
        self._proto: _Proto | None = None
        self._rtcp_proto: _Proto | None = None
        #: the RTP socket (a duplicate descriptor) while it is read in the pacer's ticks
        self._rx_sock: socket.socket | None = None
        self._rx_stamps = False  # the kernel stamps its datagrams (SO_TIMESTAMPNS)
        self._direct_addr: Any = None  # RTP destination sent to through the socket directly
        #: the RTP socket (a duplicate descriptor) that RTP to ``_direct_addr`` is sent on
        self._tx_sock: socket.socket | None = None
        self._tx_sock_tried = False
        #: datagrams read in the pacer's ticks (``MediaPacer.read_in_tick``)
        self.reads_in_tick = 0
        self.rtcp_port_error: str | None = None
        self._live: str | None = None  # "echo" / "silence": frames made while sending
        #: (slot time, frame, prepared datagram) played last, sent at the next slot
        self._echo_prev: tuple[float, np.ndarray, tuple[bytes, int, int]] | None = None
        self._tick_when = 0.0
        self._echo_driven = False
        #: (prepared datagram, frame, send time, scheduled time) of a datagram handed to the
        #: socket in this tick's first phase and not counted yet (:meth:`_settle`)
        self._unsettled: tuple[tuple[bytes, int, int], np.ndarray, float, float] | None = None
        self._sent_frames: list[np.ndarray] = []
        #: what the peer's RTCP said about our stream (report blocks about our SSRC)
        self.remote_reports: list[RemoteReportReceived] = []
        self.first_sequence: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: the loop's media pacer (one timer for every stream of the loop); set by open()
        self.pacer: MediaPacer | None = None
        self._send_handle: PacerJob | None = None
        self._play_handle: PacerJob | None = None
        self._rtcp_handle: PacerJob | None = None
        self._source: np.ndarray | None = None
        self._t0 = 0.0
        self._k_send = 0
        self._k_play = 0
        self._play_start: float | None = None
        self._played: list[tuple[float, np.ndarray]] = []
        self._waiters: list[tuple[float, asyncio.Future]] = []
        self.sending_done: asyncio.Future | None = None
        # re-framing of sample-based payloads whose packet time is not ours
        rx = self.rx
        self._bytes_per_tick = (rx.bitrate / 8.0 / rx.clock_rate) if rx.name in SAMPLE_BASED_CODECS else None
        self._ts_base: int | None = None  # RTP timestamp of our slot 0
        self._seq_offset: int | None = None  # sequence number of slot 0 (re-framed packets)
        self._last_direct: tuple[int, int] | None = None  # (slot, sequence) of the last packet pushed as is
        self._reframing = False
        self._pieces: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # slot -> (payload bytes, filled mask)
        self._reframe_ssrc: int | None = None
        self._max_slot = -1
        #: called as ``on_played(slot_time, frame)`` for every frame the playout played
        #: (int16 at the codec's rate): a bridge (:mod:`voicelab.gateway`) forwards it
        self.on_played: Any = None
        #: called as ``on_packet(packet, arrival)`` for every RTP packet accepted (before the
        #: jitter buffer): a pass-through bridge forwards the payload as it is
        self.on_packet: Any = None
        self._frame_source: Any = None  # send_live("source"): callable(now) -> int16 frame or None
        #: RTP sequence number of the packet played in the latest slot (None: concealed), for
        #: ``on_played`` hooks that need it (a voice agent's turn measurement)
        self.last_played_seq: int | None = None
        #: with ``track``: RTP sequence number -> send time / arrival time / playout slot time
        self.send_times: dict[int, float] | None = {} if track else None
        self.arrivals: dict[int, float] | None = {} if track else None
        self.played_at: dict[int, float] | None = {} if track else None
        #: with ``track`` and :meth:`tap_arrivals`: RTP sequence number -> time the tap released it
        self.tapped_at: dict[int, float] | None = {} if track else None
        self.tap: Any = None  # an ArrivalTap (tap_arrivals)
        self._on_tapped: Any = None
        #: the native engine's id of this stream while its thread plays it (None: Python plays it)
        self._native: int | None = None
        self._native_own_rx = False  # the engine's reading descriptor was made for it (not read_in_tick's)
        self._native_wait = 2  # played slots until the next hand-over check (the first echo leaves at the second)
        self._last_src: Any = None  # where the last accepted RTP packet came from
        #: slots the native engine played for this stream
        self.native_slots = 0
        #: datagrams the engine built that the replay did not build alike (0 unless something is wrong)
        self.native_mismatches = 0
        #: times the engine handed the stream back (a packet it could not decide on alone)
        self.native_bails = 0
        self._last_outcome: str | None = None
        self._native_broken = False  # the engine built a datagram the replay did not: never again
        #: queue mode (a prompt, silence: frames that do not depend on what arrives): the
        #: engine sends what Python queued; index of the next frame not yet handed to it
        self._native_fed: int | None = None

    def tap_arrivals(self, on_frames: Any, *, window: int = 2) -> Any:
        """Hand the peer's frames to ``on_frames(frames)`` as they arrive, not after the jitter buffer.

        Each accepted media packet goes through an :class:`~voicelab.rtp.tap.ArrivalTap`
        (its own decoder, sequence order, a reorder window of ``window`` packets, gaps
        concealed) besides the playout; ``on_frames`` gets the list of
        :class:`~voicelab.rtp.tap.TapFrame` each arrival releases (often one, none while
        waiting for a missing packet). This is what a voice agent's recogniser listens to.
        Returns the tap.
        """
        from .tap import ArrivalTap

        name, params = self._codec_spec
        self.tap = ArrivalTap(codecs.get(name, **params), window=window, plc=self.plc)
        self._on_tapped = on_frames
        return self.tap

    @classmethod
    def for_media(cls, iface: Any, media: Any, *, local_addr: tuple[str, int], rtcp_mux: bool | None = None,
                  **options: Any) -> "LiveAudioStream":
        """A stream for an SDP-negotiated media description (:class:`voicelab.sdp.NegotiatedMedia`).

        ``rtcp_mux`` defaults to what was negotiated; SRTP is keyed from the SDES keys
        the offer/answer agreed (``media.srtp``); other options as for the constructor.
        """
        if getattr(media, "srtp", None) is not None and "srtp" not in options:
            from .srtp import SrtpContext

            options["srtp"] = SrtpContext.from_sdes(media.srtp.local_key, media.srtp.remote_key, media.srtp.suite)
        return cls(
            iface, codec=media.codec, codec_params=dict(media.params), payload_type=media.payload_type,
            local_addr=local_addr, remote_addr=(media.remote_address, media.remote_port),
            rtcp_mux=bool(media.rtcp_mux) if rtcp_mux is None else rtcp_mux,
            remote_rtcp_addr=None if rtcp_mux else (media.rtcp_address, media.rtcp_port),
            **options,
        )

    # ----------------------------------------------------------------- set-up
    async def open(self) -> "LiveAudioStream":
        """Bind the socket and start RTCP (no media is sent before :meth:`send`)."""
        self._loop = asyncio.get_running_loop()
        if self.pacer is None:
            self.pacer = pacer_for(self._loop)
        now = self._loop.time()
        # NTP time = loop time + offset; the offset only needs to be the same for both
        # ends of a call in one process, so derive it from nothing wall-clock.
        self.session = RtpSession(epoch_offset=2_208_988_800.0, **self.session_args)  # type: ignore[arg-type]
        self.session.start(now)
        _, self._proto = await self.iface.create_datagram_endpoint(lambda: _Proto(self), local_addr=self.local_addr)
        if not self.session.rtcp_mux:
            host, port = self.local_address
            try:
                _, self._rtcp_proto = await self.iface.create_datagram_endpoint(
                    lambda: _Proto(self, "rtcp"), local_addr=(host, port + 1))
            except (OSError, VoicelabError) as exc:
                self.rtcp_port_error = f"RTCP port {port + 1} could not be bound ({exc}); RTCP is sent from the RTP port"
        self.sending_done = self._loop.create_future()
        self._arm_rtcp()
        return self

    @property
    def local_address(self) -> tuple[str, int]:
        """Bound (host, port)."""
        return self._proto.transport.get_extra_info("sockname")[:2]  # type: ignore[union-attr]

    def set_remote(self, addr: tuple[str, int], rtcp_addr: tuple[str, int] | None = None) -> None:
        """Where media goes (e.g. from the SDP answer); RTCP follows unless given.

        A stream the native engine plays is taken back first (the engine sends to the
        address it was given); it is handed over again once steady at the new address.
        """
        self._native_detach()
        self.session.remote_addr = addr  # type: ignore[union-attr]
        if rtcp_addr is None:
            rtcp_addr = addr if self.session.rtcp_mux else (addr[0], addr[1] + 1)  # type: ignore[union-attr]
        self.session.remote_rtcp_addr = rtcp_addr  # type: ignore[union-attr]

    # ---------------------------------------------------------------- sending
    def send(self, samples: np.ndarray, sample_rate: int, *, start_at: float | None = None) -> float:
        """Start sending ``samples`` (float audio); returns ``t0``, the capture start time.

        The audio is resampled to the codec's rate if needed; :attr:`sending_done`
        resolves after the last frame was sent.
        """
        from ..audio import resample

        if self.session is None:
            raise ParameterError("open() the stream before send()")
        self._native_take_send()
        x = resample(np.asarray(samples, dtype=np.float64), sample_rate, self.tx.sample_rate)
        F = self.tx.frame_samples
        n = int(np.ceil(len(x) / F))
        pcm = np.zeros(n * F, dtype=np.int16)
        pcm[: len(x)] = to_int16(x)
        self._source = pcm
        self._live = None
        self._t0 = self.pacer.align(self._loop.time()) if start_at is None else float(start_at)  # type: ignore[union-attr]
        self._k_send = 0
        self._arm_send()
        return self._t0

    def send_live(self, kind: str = "echo", *, start_at: float | None = None, source: Any = None) -> float:
        """Send frames made while the call runs, until :meth:`close`; returns ``t0``.

        Parameters
        ----------
        kind : {"echo", "silence", "bridge"}
            ``"echo"``: each frame this stream *played* (after its jitter buffer, decoder
            and PLC) is re-encoded and sent when it has finished playing, as a real echo
            agent's pipeline does (not by reflecting packets); nothing is sent before
            the first frame is played. ``"silence"``: encoded digital silence (a recording agent that keeps
            the media path and RTCP alive). ``"bridge"``: frames played by *another*
            stream (the other leg of a gateway) are handed over with :meth:`forward`
            and sent when they have finished playing there. ``"source"``: each frame is
            ``source(now)`` (int16 at the codec rate, one frame; None sends silence),
            asked for at each send tick: a voice agent's pipeline, a conversation driver.
        source : callable, optional
            For ``"source"``.
        """
        if self.session is None:
            raise ParameterError("open() the stream before send_live()")
        if kind not in ("echo", "silence", "bridge", "source"):
            raise ParameterError(f"send_live kind must be 'echo', 'silence', 'bridge' or 'source', got {kind!r}")
        if (kind == "source") != callable(source):
            raise ParameterError("send_live('source') needs a callable source(now) (and only it takes one)")
        self._native_take_send()
        self._frame_source = source
        if self.tx.sample_rate != self.rx.sample_rate:  # pragma: no cover - same codec both ways
            raise ParameterError("echo needs the same sample rate both ways")
        self._live = kind
        self._source = None
        self._echo_prev, self._echo_driven = None, False
        self._sent_frames.clear()
        self._t0 = self.pacer.align(self._loop.time()) if start_at is None else float(start_at)  # type: ignore[union-attr]
        self._k_send = 0
        if kind in ("silence", "source"):
            self._arm_send()
        return self._t0

    def _native_take_send(self) -> None:
        """Before a new source: take the stream back from the native engine (it would go on
        sending the old frames) and drop the send slot that hand-back re-armed."""
        if self._native is None:
            return
        self._native_detach()
        if self._send_handle is not None:
            self._send_handle.cancel()
            self._send_handle = None

    def _arm_send(self) -> None:
        when = self._t0 + (self._k_send + 1) * self.tx.frame_ms / 1000.0
        self._send_handle = self.pacer.schedule(when, self._send_frame, when)  # type: ignore[union-attr]

    def _send_frame(self, scheduled: float) -> None:
        now = self._loop.time()  # type: ignore[union-attr]
        F = self.tx.frame_samples
        if self._live is not None:  # silence until an echo has something to return
            frame = self._frame_source(now) if self._frame_source is not None else None
            if frame is None or len(frame) != F:
                frame = np.zeros(F, dtype=np.int16)
            self._emit(frame, now, scheduled)
            self._arm_send()
            return
        k = self._k_send
        self._emit(self._source[k * F : (k + 1) * F], now, scheduled)  # type: ignore[index]
        if self._k_send * F < len(self._source):  # type: ignore[arg-type]
            self._arm_send()
        elif not self.sending_done.done():  # type: ignore[union-attr]
            self.sending_done.set_result(now)  # type: ignore[union-attr]

    def _emit(self, frame: np.ndarray, now: float, scheduled: float) -> None:
        """Encode, packetize and send one frame (captured during the frame before ``scheduled``)."""
        self._transmit(self._prepare(frame), frame, scheduled)

    def _prepare(self, frame: np.ndarray) -> tuple[bytes, int, int]:
        """Encode and packetize the next frame to send: (datagram, RTP timestamp, octets)."""
        return self.session.prepare_frame(self.tx.encode(frame), marker=(self._k_send == 0))  # type: ignore[union-attr]

    def _transmit(self, prepared: tuple[bytes, int, int], frame: np.ndarray, scheduled: float) -> None:
        """Hand a prepared datagram to the socket now, then count it (pacing error: send time - ``scheduled``).

        The send time is the loop time read just before the socket send, after any
        encoding: what the statistics, :attr:`send_times` and the RTCP sender reports'
        RTP/NTP mapping record for this packet.
        """
        if self._unsettled is not None:  # an echo sent in this tick, not counted yet: keep the order
            self._settle()
        now = self._loop.time()  # type: ignore[union-attr]
        self._unsettled = (prepared, frame, now, scheduled)
        try:
            self._sendto(prepared[0], self.session.remote_addr)  # type: ignore[union-attr]
        finally:
            self._settle()

    def _settle(self) -> None:
        """Count the datagram sent last (:attr:`_unsettled`): statistics, RTCP counters, recordings."""
        (data, timestamp, octets), frame, now, scheduled = self._unsettled  # type: ignore[misc]
        self._unsettled = None
        self.session.frame_sent(now, timestamp, octets)  # type: ignore[union-attr]
        if self.first_sequence is None:
            self.first_sequence = int.from_bytes(data[2:4], "big")
        if self.send_times is not None:
            self.send_times[int.from_bytes(data[2:4], "big")] = now
        if self._live is not None:
            self._sent_frames.append(frame)
        self.stats.frames_sent += 1
        self.stats.send_lateness_s.append(now - scheduled)
        self._k_send += 1

    def _sendto(self, data: bytes, addr, *, rtcp: bool = False) -> None:
        if not rtcp and addr is not None and addr == self._direct_addr:
            # RTP to an address the interface already accepted goes straight to the socket
            # (no guarded transport, no re-check of the address, no asyncio layer: 4-5
            # Python calls fewer per packet), unless it would block
            try:
                self._tx_sock.sendto(data, addr)  # type: ignore[union-attr]
                return
            except (BlockingIOError, InterruptedError):
                self._direct_addr = None  # the transport queues it, and what follows, in order
            except OSError:
                self.socket_errors += 1  # as the transport's error_received
                return
        proto = self._rtcp_proto if rtcp and self._rtcp_proto is not None else self._proto
        if addr is not None and proto is not None and proto.transport is not None:
            tr = proto.transport
            try:
                tr.sendto(data, addr)
            except VoicelabError:
                # e.g. a peer's SDP names an address this interface may not reach; with
                # latching the stream follows the peer's real source once media arrives
                self.stats.refused_sends += 1
                return
            if not rtcp and self.capture is None:
                # accepted, nothing queued: the next RTP to this address goes direct
                sock = self._tx_sock if self._tx_sock_tried else self._direct_socket(tr)
                self._direct_addr = (addr if sock is not None and not tr.get_write_buffer_size() and _is_ip_literal(addr[0])
                                     else None)  # fmt: skip
            if self.capture is not None:
                src = tuple(tr.get_extra_info("sockname")[:2])
                self.capture.append((self._loop.time(), src, tuple(addr[:2]), data))  # type: ignore[union-attr]

    def _direct_socket(self, tr: Any) -> socket.socket | None:
        """A duplicate descriptor of the RTP socket for direct sends (once per stream);
        None where the transport has no real socket (the virtual network)."""
        self._tx_sock_tried = True
        try:
            ts = tr.get_extra_info("socket")
            if ts is None or tr.is_closing() or not hasattr(tr, "get_write_buffer_size"):
                return None
            sock = ts.dup()
            sock.setblocking(False)
        except (OSError, AttributeError, NotImplementedError):
            return None
        self._tx_sock = sock
        return sock

    # -------------------------------------------------------------- receiving
    def _on_datagram(self, data: bytes, addr, socket_kind: str | None = None, arrival: float | None = None) -> None:
        now = self._loop.time() if arrival is None else arrival  # type: ignore[union-attr]
        if self.capture is not None:
            here = self._rtcp_proto.transport.get_extra_info("sockname")[:2] if socket_kind == "rtcp" else self.local_address  # type: ignore[union-attr]
            self.capture.append((now, tuple(addr[:2]), tuple(here), bytes(data)))
        # without rtcp-mux the first socket is the RTP one and port + 1 the RTCP one
        kind = None if self.session.rtcp_mux else (socket_kind or "rtp")  # type: ignore[union-attr]
        st = self.session.stats  # type: ignore[union-attr]
        before = st.packets_received + st.rtcp_received
        events = self.session.receive(data, now, addr, kind)  # type: ignore[union-attr]
        if st.packets_received + st.rtcp_received != before:
            # the latest arrival (a replayed log's packets may be older than an RTCP report
            # the loop read meanwhile on the RTCP port)
            last = self.last_received_at
            self.last_received_at = now if last is None or now > last else last
        for ev in events:
            if isinstance(ev, RemoteReportReceived):
                self.remote_reports.append(ev)
            elif isinstance(ev, RtpReceived):
                self._last_src = addr
                if self.arrivals is not None:
                    self.arrivals.setdefault(ev.packet.sequence_number, ev.arrival)
                if self.on_packet is not None:  # as it arrived (before any re-framing)
                    self.on_packet(ev.packet, ev.arrival)
                if self.tap is not None and ev.packet.payload_type == self.payload_type:
                    frames = self.tap.push(ev.packet.sequence_number, ev.packet.payload, ev.arrival)
                    if self.tapped_at is not None:
                        for f in frames:
                            if f.seq is not None:
                                self.tapped_at.setdefault(f.seq, f.t)
                    if frames:
                        self._on_tapped(frames)
                self._push(ev.packet, ev.arrival)
                if self._play_start is None and self.jb.start_time() is not None:
                    # on the pacer's tick grid, so that streams share its wake-ups
                    self._play_start = self.pacer.align(self.jb.start_time())  # type: ignore[union-attr]
                    self._arm_play()
                    if self.pacer.read_in_tick and socket_kind is None:  # type: ignore[union-attr]
                        self._read_in_tick()

    # ------------------------------------------------- reading in the pacer's ticks
    def _read_in_tick(self) -> None:
        """From now on read the RTP socket in each playout slot, not on each arrival.

        The loop stops watching the socket (``pause_reading``); :meth:`_drain` reads it
        through a duplicate descriptor. Streams whose transport has no real socket (the
        virtual network) or cannot pause keep being read by the loop.
        """
        tr = self._proto.transport if self._proto is not None else None
        ts = tr.get_extra_info("socket") if tr is not None else None
        if ts is None or not hasattr(tr, "pause_reading") or self._rx_sock is not None:
            return
        try:
            sock = ts.dup()
            sock.setblocking(False)
        except (OSError, AttributeError):
            return
        stamps = False
        if _SO_TIMESTAMPNS is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
                stamps = True
            except OSError:
                pass
        self._rx_sock, self._rx_stamps = sock, stamps
        tr.pause_reading()  # type: ignore[union-attr]

    def _drain(self) -> None:
        """Read what waits in the RTP socket, each datagram with its arrival time.

        The arrival time is the kernel's receive timestamp (real-time clock) moved onto
        the loop clock by its age: ``loop.time() - (now_real - stamp)``, the age bounded
        to 0..5 s (the real-time clock may be stepped). Without a stamp: the read time.
        The real-time clock is read only to measure that age.
        """
        sock = self._rx_sock
        if sock is None:
            return
        buf = self.pacer.rx_buffer()  # type: ignore[union-attr]
        anc = socket.CMSG_SPACE(_TIMESPEC.size) if self._rx_stamps else 0
        loop_now: float | None = None
        real_now = 0.0
        for _ in range(_MAX_READS_PER_SLOT):
            try:
                n, ancdata, flags, addr = sock.recvmsg_into((buf,), anc)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ICMP port unreachable from an earlier send: as the loop's error_received
                self.socket_errors += 1
                continue
            if loop_now is None:
                loop_now = self._loop.time()  # type: ignore[union-attr]
                real_now = time.clock_gettime(time.CLOCK_REALTIME) if anc else 0.0
            arrival = loop_now
            for level, kind, data in ancdata:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
                    sec, nsec = _TIMESPEC.unpack_from(data)
                    age = real_now - (sec + nsec * 1e-9)
                    arrival = loop_now - (age if 0.0 < age < _MAX_STAMP_AGE_S else 0.0)
            if flags & socket.MSG_TRUNC:  # pragma: no cover - 64 KiB holds any UDP datagram
                continue
            self.reads_in_tick += 1
            self.pacer.reads_in_tick += 1  # type: ignore[union-attr]
            self._on_datagram(bytes(buf[:n]), addr, None, arrival)

    @property
    def foreign_packets(self) -> int:
        """Packets dropped because they came from a source we did not expect (RTP bleed)."""
        return 0 if self.session is None else int(self.session.stats.foreign_source_drops)

    def media_stats(self) -> dict[str, Any]:
        """Counters of this stream worth keeping after it closed (see :class:`StreamStats`)."""
        self._native_sync()
        return {"rtp_foreign_packets": self.foreign_packets, "reframed_packets": self.stats.reframed_packets,
                "unusable_payloads": self.stats.unusable_payloads, "playout_errors": self.stats.playout_errors,
                "last_playout_error": self.stats.last_playout_error, "outcomes": dict(self.stats.outcomes),
                "packets_received": 0 if self.session is None else int(self.session.stats.packets_received),
                "native_slots": self.native_slots, "native_bails": self.native_bails,
                "native_mismatches": self.native_mismatches}

    def _push(self, packet: RtpPacket, arrival: float) -> None:
        """Into the jitter buffer, re-cut into our frames if the peer's packet time differs.

        Sample-based codecs (G.711, G.722, L16) carry any whole number of samples per
        packet (RFC 3551 4.5), and a peer that does not say ``a=ptime`` may send 30 ms
        packets (SIPp's stock pcap) to a 20 ms receiver. Their payload bytes are cut on
        our slot boundaries (in RTP timestamp units) and each slot is pushed once it is
        complete, with a sequence number that counts slots (a missing piece is a loss).
        Frame-based codecs are pushed as they come.
        """
        bpt = self._bytes_per_tick
        if bpt is None:
            self.jb.push(packet, arrival)
            return
        inc = self.rx.timestamp_increment
        flen = int(round(inc * bpt))
        if self._ts_base is None or packet.ssrc != self._reframe_ssrc:
            self._ts_base, self._reframe_ssrc = packet.timestamp, packet.ssrc
            self._reframing, self._pieces, self._last_direct, self._max_slot = False, {}, None, -1
        rel = (packet.timestamp - self._ts_base) & 0xFFFFFFFF
        if rel >= 0x80000000:  # before our slot 0 (reordered first packets): too old to place
            rel -= 0x100000000
        payload = packet.payload
        if not self._reframing and len(payload) == flen and rel % inc == 0:
            slot = rel // inc
            self._last_direct = (slot, packet.sequence_number)
            self.jb.push(packet, arrival)
            return
        n_ticks = len(payload) / bpt
        if n_ticks != int(n_ticks) or not payload or n_ticks > MAX_PACKET_MS / 1000.0 * self.rx.clock_rate:
            self.stats.unusable_payloads += 1
            return
        if not self._reframing:
            self._reframing = True
            if self._last_direct is not None:
                self._seq_offset = (self._last_direct[1] - self._last_direct[0]) & 0xFFFF
            else:
                self._seq_offset = (packet.sequence_number - rel // inc) & 0xFFFF
        self.stats.reframed_packets += 1
        pos = rel * bpt  # byte offset of this payload from slot 0
        data = np.frombuffer(payload, dtype=np.uint8)
        start = int(pos)
        first_slot, last_slot = start // flen, (start + len(data) - 1) // flen
        for slot in range(first_slot, last_slot + 1):
            if slot < 0 or slot <= self._max_slot - 8:  # before slot 0, or long played
                continue
            lo, hi = max(start, slot * flen), min(start + len(data), (slot + 1) * flen)
            buf, mask = self._pieces.get(slot) or (np.zeros(flen, dtype=np.uint8), np.zeros(flen, dtype=bool))
            buf[lo - slot * flen : hi - slot * flen] = data[lo - start : hi - start]
            mask[lo - slot * flen : hi - slot * flen] = True
            if mask.all():
                self._pieces.pop(slot, None)
                self._max_slot = max(self._max_slot, slot)
                self.jb.push(RtpPacket(marker=packet.marker and slot == first_slot, payload_type=packet.payload_type,
                                       sequence_number=(self._seq_offset + slot) & 0xFFFF,  # type: ignore[operator]
                                       timestamp=(self._ts_base + slot * inc) & 0xFFFFFFFF, ssrc=packet.ssrc,
                                       payload=buf.tobytes()), arrival)  # fmt: skip
            else:
                self._pieces[slot] = (buf, mask)
        for old in [k for k in self._pieces if k <= self._max_slot - 8]:  # a piece that never came
            del self._pieces[old]

    def _arm_play(self) -> None:
        when = self._play_start + self._k_play * self.tx.frame_ms / 1000.0  # type: ignore[operator]
        self._play_handle = self.pacer.schedule(when, self._play_tick, when)  # type: ignore[union-attr]

    def _play_tick(self, when: float) -> Any:
        """The pacer's job for a playout slot, in two phases.

        First (now, for every stream due in this tick, before any decoding): hand the echo
        datagram prepared in the previous slot to the socket, stamped with the loop time
        read just before that send, and nothing else. Then (returned to the pacer, run
        after the first phase of every due stream, i.e. after the tick's last send): count
        the packet (:meth:`_settle`) and play the slot. So the k-th stream of a tick waits
        for k - 1 socket sends, not for k - 1 streams' bookkeeping.
        """
        self._tick_when = when
        prev = self._echo_prev
        if prev is not None and self._live == "echo":
            if not self._echo_driven:  # the sent recording starts with the first echoed frame
                self._echo_driven = True
                self._t0 = prev[0]
            if self._unsettled is not None:  # (never: a tick's second phase settles it)
                self._settle()
            addr = self.session.remote_addr  # type: ignore[union-attr]
            self._unsettled = (prev[2], prev[1], self._loop.time(), when)  # type: ignore[union-attr] # counted even if the send raises, as before
            if addr == self._direct_addr and addr is not None:  # the usual case, as _sendto's first branch, inlined
                try:
                    self._tx_sock.sendto(prev[2][0], addr)  # type: ignore[union-attr]
                    return self._play_rest
                except (BlockingIOError, InterruptedError):
                    self._direct_addr = None  # the transport queues it, and what follows, in order
                except OSError:
                    self.socket_errors += 1  # as the transport's error_received
                    return self._play_rest
            try:
                self._sendto(prev[2][0], addr)
            except Exception as exc:  # noqa: BLE001 - the playout must go on (and re-arm)
                self._loop.call_exception_handler({"message": "echo send failed", "exception": exc})  # type: ignore[union-attr]
        return self._play_rest

    def _play_rest(self) -> None:
        if self._unsettled is not None:  # the send's bookkeeping, after every send of the tick
            self._settle()
        if self._rx_sock is not None:  # reading in the tick: after every stream's send, before the pop
            try:
                self._drain()
            except Exception as exc:  # noqa: BLE001 - the playout must go on (and re-arm)
                self._loop.call_exception_handler({"message": "reading the RTP socket failed", "exception": exc})  # type: ignore[union-attr]
        self._play_slot(self._tick_when, echo_sent=True)

    def _play_slot(self, when: float, *, echo_sent: bool = False) -> None:
        try:
            echo = self._live == "echo"
            if echo and not echo_sent:  # the frame played in the previous slot has now been heard: send it first
                self._send_echo(when)
            try:
                p = self.jb.pop(when)
                frame, outcome = render(p, self.rx, plc=self.plc, fec=self.fec)
            except Exception as exc:  # noqa: BLE001 - one bad slot must not end the stream
                self.stats.playout_errors += 1
                self.stats.last_playout_error = f"{type(exc).__name__}: {exc}"
                frame, outcome = self._conceal(), "error"
            self.stats.outcomes[outcome] = self.stats.outcomes.get(outcome, 0) + 1
            self._last_outcome = outcome
            self._played.append((when, frame))
            seq = p.sequence_number if outcome != "error" and p.kind in ("frame", "skip") else None
            self.last_played_seq = seq
            if self.played_at is not None and seq is not None:
                self.played_at.setdefault(seq, when)
            if echo:
                self._keep_echo(when, frame)
            if self.on_played is not None:
                self.on_played(when, frame)
            if self._waiters:
                for t, fut in [w for w in self._waiters if w[0] <= when]:
                    if not fut.done():
                        fut.set_result(when)
                self._waiters = [w for w in self._waiters if w[0] > when]
        finally:
            self._k_play += 1
            if self._native is None and not ((echo or self._live in (None, "silence")) and self.last_played_seq is not None
                                             and self._maybe_native()):
                self._arm_play()  # the playout timer survives whatever happened in this slot

    def _conceal(self) -> np.ndarray:
        try:
            frame = np.asarray(self.rx.conceal(), dtype=np.int16)
            if frame.shape == (self.rx.frame_samples,):
                return frame
        except Exception:  # noqa: BLE001 - the decoder itself is broken: silence
            pass
        return np.zeros(self.rx.frame_samples, dtype=np.int16)

    def _echo(self, when: float, frame: np.ndarray) -> None:
        """Send the frame played during the previous slot: it has now been fully "heard".

        Sending on the playout clock (rather than a free-running send clock) keeps the
        echo path free of a queue whose depth would depend on the phase of two timers,
        and the RTP timestamps true to when each frame was "captured".
        """
        self._send_echo(when)
        self._keep_echo(when, frame)

    def _keep_echo(self, when: float, frame: np.ndarray) -> None:
        """Keep the frame played at ``when``, already encoded and packetized: it leaves at the next slot.

        Building the datagram now (off the time-critical path) leaves only the socket
        send for the next slot's first phase.
        """
        self._echo_prev = (when, frame, self._prepare(frame))

    def _send_echo(self, when: float) -> None:
        """Send the frame kept from the previous slot (nothing before the first one)."""
        prev = self._echo_prev
        if prev is not None:
            if not self._echo_driven:  # the sent recording starts with the first echoed frame
                self._echo_driven = True
                self._t0 = prev[0]
            self._transmit(prev[2], prev[1], when)

    def forward(self, when: float, frame: np.ndarray) -> None:
        """Send a frame that another stream played at slot time ``when`` (``send_live("bridge")``).

        Like an echo, frame ``k`` leaves when frame ``k + 1`` is handed over, i.e. once it
        has finished playing on the other leg; ``frame`` is int16 at this codec's rate,
        ``tx.frame_samples`` long.
        """
        if self._live != "bridge":
            raise ParameterError("forward() needs send_live('bridge')")
        self._echo(when, frame)

    def send_payload(self, payload: bytes, *, marker: bool = False) -> int:
        """Send an already-encoded payload now, as the next RTP packet (a pass-through bridge).

        The RTP timestamp advances one frame per payload: forward payloads of this
        stream's codec and packet time only. Returns the packet's sequence number (its
        send time goes to :attr:`send_times` with ``track``).
        """
        if self.session is None:
            raise ParameterError("open() the stream before send_payload()")
        if self._unsettled is not None:
            self._settle()
        now = self._loop.time()  # type: ignore[union-attr]
        data = self.session.send_frame(bytes(payload), now, marker=marker)
        seq = int.from_bytes(data[2:4], "big")
        if self.first_sequence is None:
            self.first_sequence = seq
        if self.send_times is not None:
            self.send_times[seq] = now
        self._sendto(data, self.session.remote_addr)
        self.stats.frames_sent += 1
        self._k_send += 1
        return seq

    def played_through(self, t: float) -> asyncio.Future:
        """A future that resolves once the slot playing at loop time ``t`` has been played."""
        self._native_detach()  # a waiter is resolved by Python's own slots
        fut = self._loop.create_future()  # type: ignore[union-attr]
        if self._played and self._played[-1][0] >= t:
            fut.set_result(self._played[-1][0])
        else:
            self._waiters.append((t, fut))
        return fut

    # ------------------------------------------------------ the native media engine
    def _maybe_native(self) -> bool:
        """After a played echo slot: hand the stream to the loop's native engine if it is steady.

        Returns True when the engine plays the next slot (no pacer job is armed then).
        See :mod:`voicelab.rtp.native`.
        """
        nat = getattr(self.pacer, "native", None)
        if nat is None:
            return False
        self._native_wait -= 1
        if self._native_wait > 0:
            return False
        self._native_wait = 10  # not steady: look again in 10 slots
        params = self._native_steady()
        if params is None:
            return False
        own = self._rx_sock is None
        if own:
            self._read_in_tick()  # a reading descriptor with kernel timestamps; the loop stops reading
            if self._rx_sock is None:
                return False
        try:
            self._native = nat.attach(self, rx_fd=self._rx_sock.fileno(), stamps=self._rx_stamps, **params)  # type: ignore[union-attr]
        except (OSError, ValueError, TypeError, OverflowError):
            self._native = None
        if self._native is not None and "txq" in params:  # the engine sends from the next send slot on
            self._native_fed = self._k_send + len(params["txq"])
            if self._send_handle is not None:
                self._send_handle.cancel()
        if self._native is None:
            if own:
                self._native_own_rx = True
                self._native_release()
            return False
        self._native_own_rx = own
        return True

    def _native_steady(self) -> dict[str, Any] | None:
        """The engine's parameters for this stream if its next slots need no decision, else None."""
        s = self.session
        echo = self._live == "echo"
        if echo:
            if self._echo_prev is None:
                return None
        elif not (self._live == "silence" or (self._live is None and self._source is not None)):
            return None  # "bridge", "source": frames made by others, when they come
        elif self._unsettled is not None or self._send_handle is None or (
                self._send_handle.cancelled and not (self._live is None and self.sending_done.done())):  # type: ignore[union-attr]
            return None
        if (self._k_send < 1 or self._last_outcome != "played"
                or self.rx.name not in ("pcmu", "pcma") or self.tx.name != self.rx.name
                or type(self.jb) is not FixedJitterBuffer or self._reframing or self.capture is not None
                or self.tap is not None or self.send_times is not None or self.on_played is not None
                or self.on_packet is not None or self._waiters or self._frame_source is not None
                or s is None or s.srtp is not None or s.remote_ssrc is None or not s.media_steady()
                or self._tx_sock is None or self._direct_addr is None or self._direct_addr != s.remote_addr
                or self.last_played_seq is None):  # fmt: skip
            return None
        dst, src = self._direct_addr, self._last_src
        if (not isinstance(src, tuple) or len(src) != 2 or len(dst) != 2 or ":" in str(src[0]) or ":" in str(dst[0])
                or not _is_ip_literal(src[0])):  # fmt: skip
            return None  # IPv4 literals only
        fb = self.rx.frame_samples  # G.711: one byte per sample
        if echo:
            prev = self._echo_prev[2][0]  # type: ignore[index]
            if len(prev) != 12 + fb or prev[0] != 0x80 or prev[1] & 0x80:
                return None
        else:
            prev = bytes([0x80, self.payload_type & 0x7F]) + bytes(10 + fb)  # (unused in queue mode)
        jb, inc = self.jb, self.rx.timestamp_increment
        seq, ts = (self.last_played_seq + 1) & 0xFFFF, jb._slot_timestamp(jb._cursor)
        queue = []
        for index in sorted(jb._buffer):  # delivered, not played yet
            e = jb._buffer[index]
            if index != jb._cursor + len(queue) or e.packet.sequence_number != seq or e.packet.timestamp != ts:
                return None
            queue.append((seq, ts, e.packet.payload, e.arrival))
            seq, ts = (seq + 1) & 0xFFFF, (ts + inc) & 0xFFFFFFFF
        for arrival, _, packet in sorted(jb._pending):  # pushed, arriving after the last slot
            if packet.sequence_number != seq or packet.timestamp != ts:
                return None
            queue.append((seq, ts, packet.payload, arrival))
            seq, ts = (seq + 1) & 0xFFFF, (ts + inc) & 0xFFFFFFFF
        if any(len(q[2]) != fb for q in queue) or len(queue) > 48:
            return None
        return {"tx_fd": self._tx_sock.fileno(), "dst": (str(dst[0]), int(dst[1])), "src": (str(src[0]), int(src[1])),
                "payload_type": self.payload_type, "ssrc": s.remote_ssrc, "next_seq": seq, "next_timestamp": ts,
                "timestamp_increment": inc, "law": 0 if self.rx.name == "pcmu" else 1, "frame_bytes": fb,
                "play_start": self._play_start, "frame_ms": self.tx.frame_ms, "k": self._k_play,
                "prev": prev, "queue": queue,
                **({} if echo else self._native_tx_params())}  # fmt: skip

    def _native_tx_end(self) -> int:
        """Queue mode: index of the frame after the last one to send (a prompt's length; silence: none)."""
        if self._live is None:
            return len(self._source) // self.tx.frame_samples  # type: ignore[arg-type]
        return 1 << 62

    def _native_tx_frames(self, start: int, stop: int) -> list[bytes]:
        """Queue mode: the datagrams of frames ``start`` to ``stop`` (frame ``_k_send`` is the next to
        send), as :meth:`_send_frame` will build them: the source's frames (silence in ``"silence"``
        mode) encoded, behind the packetizer's next headers."""
        pk = self.session.packetizer  # type: ignore[union-attr]
        k0, F, inc = self._k_send, self.tx.frame_samples, pk.timestamp_increment
        seq0, ts0, pt, ssrc = pk.next_sequence_number, pk.next_timestamp, pk.payload_type & 0x7F, pk.ssrc
        silence = self.tx.encode(np.zeros(F, dtype=np.int16)) if self._live is not None else b""
        out = []
        for j in range(start, stop):
            payload = silence if self._live is not None else self.tx.encode(self._source[j * F : (j + 1) * F])  # type: ignore[index]
            out.append(_RTP_HEADER.pack(0x80, pt, (seq0 + j - k0) & 0xFFFF, (ts0 + (j - k0) * inc) & 0xFFFFFFFF, ssrc)
                       + payload)
        return out

    def _native_tx_params(self) -> dict[str, Any]:
        """The engine's queue-mode parameters: the send clock and the next datagrams to send."""
        end = self._native_tx_end()
        stop = min(self._k_send + _NATIVE_TX_QUEUE, end)
        return {"send_t0": self._t0, "send_k": self._k_send, "txq": self._native_tx_frames(self._k_send, stop),
                "tx_end": stop >= end}

    def _native_feed(self) -> None:
        """Queue mode: top the engine's send queue up (after a replay, so ``_k_send`` counts its sends)."""
        fed, end = self._native_fed, self._native_tx_end()
        if fed is None or self._native is None or fed >= end:
            return
        stop = min(self._k_send + _NATIVE_TX_QUEUE, end)
        if stop - fed < _NATIVE_TX_QUEUE // 8 and stop < end:
            return  # plenty queued: top up in bigger steps
        if self.pacer.native.feed(self._native, self._native_tx_frames(fed, stop), stop >= end):  # type: ignore[union-attr]
            self._native_fed = stop

    def _native_sync(self) -> None:
        """Replay what the native engine did for this stream so far (nothing when Python plays it)."""
        if self._native is not None:
            self._native_replay(self.pacer.native.drain(self._native))  # type: ignore[union-attr]
            if self._native_fed is not None:
                self._native_feed()

    def _native_detach(self) -> None:
        """Take the stream back from the native engine now (it replays the rest; Python plays the next slot)."""
        sid = self._native
        if sid is None:
            return
        records = self.pacer.native.detach(sid)  # type: ignore[union-attr]
        self._native_replay(records)
        if self._native is not None:  # the log ended in a played slot: Python goes on from the next one
            self._native_release()
            self._native_wait = max(self._native_wait, 10)
            if self.session is not None and self._proto is not None and self._proto.transport is not None:
                self._arm_play()

    def _native_release(self) -> None:
        """Python plays the stream again: forget the engine's id, read the socket as before."""
        if self._native is not None:
            self.pacer.native.forget(self._native)  # type: ignore[union-attr]
        self._native = None
        if self._native_fed is not None:  # queue mode: Python's send clock goes on from the next frame
            self._native_fed = None
            if self._k_send < self._native_tx_end() and self.session is not None:
                self._arm_send()
        if self._native_own_rx:
            self._native_own_rx = False
            sock, self._rx_sock = self._rx_sock, None
            if sock is not None:
                sock.close()
            tr = self._proto.transport if self._proto is not None else None
            if tr is not None and not tr.is_closing():
                tr.resume_reading()  # type: ignore[union-attr]

    def _native_replay(self, records: list) -> None:
        """Run the engine's log through this stream's own objects, in order (see :mod:`voicelab.rtp.native`)."""
        wrong = False
        for rec in records:
            kind = rec[0]
            if kind == "a":  # a datagram read, with its arrival time
                self._on_datagram(rec[3], rec[2], None, rec[1])
            elif kind == "s" and len(rec) > 4:  # queue mode: frame _k_send, sent at rec[2] for send slot rec[1]
                if self._native_replay_send(rec) and self._native is not None and not self._native_broken:
                    self.native_mismatches += 1
                    wrong = self._native_broken = True
                    self._native_wait = 1 << 62
            elif kind == "s":  # the previous slot's datagram, sent at rec[2] for slot rec[1]: count it
                prev = self._echo_prev
                self._unsettled = (prev[2], prev[1], rec[2], rec[1])  # type: ignore[index]
                self._settle()
                if rec[3]:
                    self.socket_errors += 1
            elif kind == "p":  # slot rec[1] played packet rec[2]; rec[3] is the datagram built for the next slot
                self._play_slot(rec[1], echo_sent=True)
                self.native_slots += 1
                if (self._native is not None and not self._native_broken
                        and (self.last_played_seq != rec[2] or (rec[3] is not None and (
                            self._echo_prev is None or self._echo_prev[2][0] != rec[3])))):
                    self.native_mismatches += 1  # counted once: the stream never goes back to the engine
                    wrong = self._native_broken = True
                    self._native_wait = 1 << 62
            elif kind == "e":  # a read error (as the loop's error_received)
                self.socket_errors += 1
            elif kind == "b":  # the engine stopped at slot rec[1] (after its send when rec[2])
                self.native_bails += 1
                self._native_release()
                self._native_wait = max(self._native_wait, 10)
                if rec[2] == 2:  # queue mode: the engine did not play slot rec[1]; Python does, at its time
                    self._arm_play()
                elif rec[2]:
                    self._play_slot(rec[1], echo_sent=True)  # arms the next slot
                else:
                    rest = self._play_tick(rec[1])
                    rest()
        if wrong and self._native is not None:
            self._native_detach()  # the engine was wrong about this stream: Python plays it from here

    def _native_replay_send(self, rec: tuple) -> bool:
        """Replay a queue-mode send: build frame ``_k_send`` as :meth:`_send_frame` does, count it
        as sent at ``rec[2]`` (send slot ``rec[1]``); True when the engine sent another datagram."""
        F = self.tx.frame_samples
        k = self._k_send
        if self._live is None:
            frame = self._source[k * F : (k + 1) * F]  # type: ignore[index]
        else:
            frame = np.zeros(F, dtype=np.int16)
        prepared = self._prepare(frame)
        self._unsettled = (prepared, frame, rec[2], rec[1])
        self._settle()
        if rec[3]:
            self.socket_errors += 1
        if (self._live is None and self._k_send * F >= len(self._source)  # type: ignore[arg-type]
                and self.sending_done is not None and not self.sending_done.done()):
            self.sending_done.set_result(rec[2])
        return prepared[0] != rec[4]

    # ------------------------------------------------------------------- RTCP
    def rtcp_view(self) -> dict[str, float | None]:
        """Our stream as the peer's last RTCP report block described it.

        Returns
        -------
        dict
            ``loss_rate`` (cumulative lost / expected, RFC 3550 6.4.1), ``jitter_ms``
            (interarrival jitter), ``reports`` (how many blocks arrived) and
            ``expected`` (packets the last report covers); None values when no report
            arrived.
        """
        self._native_sync()
        if not self.remote_reports or self.first_sequence is None:
            return {"loss_rate": None, "jitter_ms": None, "reports": 0, "expected": 0}
        r = self.remote_reports[-1]
        expected = r.highest_sequence - self.first_sequence + 1
        loss = r.cumulative_lost / expected if expected > 0 else None
        return {"loss_rate": loss, "jitter_ms": r.jitter_ms, "reports": len(self.remote_reports), "expected": expected}

    def _arm_rtcp(self) -> None:
        nt = self.session.next_timer()  # type: ignore[union-attr]
        if nt is not None:
            # due at nt itself, not ``early`` before it (the session would have nothing to send),
            # rounded up to the pacer's grid: the report shares a playout tick's wake-up
            when = self.pacer.align(nt + self.pacer.early)  # type: ignore[union-attr]
            self._rtcp_handle = self.pacer.schedule(when, self._rtcp_tick)  # type: ignore[union-attr]

    def _rtcp_tick(self, _when: float) -> Any:
        """The pacer's RTCP job: the report goes in the tick's second phase, after the media sends."""
        return self._rtcp

    def _rtcp(self, _when: float | None = None) -> None:
        self._native_sync()  # the report counts every packet sent and received so far
        if self._unsettled is not None:  # a report built in the tick of a send counts that send
            self._settle()
        for data in self.session.handle_timer(self._loop.time()):  # type: ignore[union-attr]
            self._sendto(data, self.session.remote_rtcp_addr, rtcp=True)  # type: ignore[union-attr]
        self._arm_rtcp()

    # -------------------------------------------------------------- recordings
    def sent_audio(self) -> tuple[np.ndarray, float]:
        """(float samples at the codec rate, loop time of the first sample)."""
        self._native_sync()
        if self._live is not None:
            return (to_float(np.concatenate(self._sent_frames)) if self._sent_frames else np.zeros(0)), self._t0
        return (to_float(self._source) if self._source is not None else np.zeros(0)), self._t0

    def received_audio(self) -> tuple[np.ndarray, float]:
        """(float samples at the codec rate, loop time of the first sample) of what was played."""
        self._native_sync()
        if not self._played:
            return np.zeros(0), 0.0
        return to_float(np.concatenate([f for _, f in self._played])), self._played[0][0]

    # ---------------------------------------------------------------- closing
    async def close(self) -> None:
        """Stop sending and playing, send RTCP BYE, close the socket (waits for it)."""
        self._native_detach()
        for h in (self._send_handle, self._play_handle, self._rtcp_handle):
            if h is not None:
                h.cancel()
        if self._unsettled is not None:  # (a tick's second phase settles it; closed in between: count it)
            self._settle()
        for dup in (self._rx_sock, self._tx_sock):
            if dup is not None:
                dup.close()  # the duplicate descriptor only; the transport closes the socket
        self._rx_sock, self._tx_sock, self._direct_addr = None, None, None
        self._tx_sock_tried = True  # no new duplicate after close
        if self.session is not None and self._proto is not None and self._proto.transport is not None:
            self._sendto(self.session.close(self._loop.time()), self.session.remote_rtcp_addr, rtcp=True)  # type: ignore[union-attr]
            self._proto.transport.close()
            await self._proto.closed
        if self._rtcp_proto is not None and self._rtcp_proto.transport is not None:
            self._rtcp_proto.transport.close()
            await self._rtcp_proto.closed
