"""The agent's WebRTC front: browsers and the lab's WebRTC caller reach the same agent.

``voicelab agent serve --webrtc HOST:PORT`` and tests call :func:`serve_webrtc` with a
started :class:`voicelab.agent.Agent`. The front is a
:class:`~voicelab.webrtc.signaling.SignalingServer` (token endpoint, WebSocket, browser
page) whose ``on_offer`` hook answers each offer with a
:func:`~voicelab.webrtc.peer.make_peer_connection` peer in ``mode="lab"``: the lab's
encoder, jitter buffer and PLC, as the SIP agent's RTP streams use. One process answers
SIP and WebRTC callers with the same agent:

* the front opens its sockets through the agent's network interface
  (``agent.iface``), uses the agent's ``mode`` (``play``, ``echo``, ``record:DIR``),
  ``codecs``, ``jitter_buffer`` and speech;
* ``agent.max_calls`` bounds SIP and WebRTC calls together (an offer beyond it gets the
  signaling error ``offer_failed``);
* finished calls go into the agent's :attr:`~voicelab.agent.Agent.recordings` dict
  (key ``"webrtc:<session id>"``, the same ``(sent, received, sample_rate)`` tuple as a
  SIP call, bounded by ``agent.keep_recordings``) and, in ``record`` mode, WAV files
  into ``agent.recorded_files``.

The codec is the first one in the *offer's* order that the agent accepts and WebRTC
carries (opus, pcmu, pcma, g722): a browser offering Opus first gets Opus; the answer
names only that codec. ``codec_params`` (e.g. ``{"opus": {"bitrate": 32000}}``) tune the
lab's encoder for a codec.

What the agent does with a call
-------------------------------
``play``
    Speech from the agent (the agent's corpus speech or ``play:FILE``) starts when the
    connection is up; what arrives is played out and recorded.
``echo``
    Every frame the agent's playout *played* (after its jitter buffer, decoder and PLC)
    is handed to aiortc's sender once it has finished playing (one frame after its
    playout slot) and re-encoded by the lab's encoder: the pipeline of
    :meth:`voicelab.rtp.live.LiveAudioStream.send_live` (``"echo"``), so an echo round
    trip is caller frame + agent buffer + agent frame + caller buffer + network.
    Nothing is sent before the first frame is played.
``record:DIR``
    Encoded silence goes back (media path and RTCP stay alive); what arrived is written
    to ``DIR/<n>-webrtc-<session>.wav`` at hang-up.

Measured per call (:class:`WebRtcCall`, kept after hang-up in
:attr:`WebRtcFront.finished`): what was sent and what was played, each with the loop
time of its first sample (so delay and PESQ follow from
:func:`voicelab.calls.measure_direction` when the caller records on the same clock), and
a timeline merging the signaling session's events (``offer_received``,
``answer_sent``, ...), the peer's ICE/DTLS states (``gather:completed``,
``ice:completed``, ``dtls:connected``, ``connection:connected``) and media events
(``media:send_start``, ``media:first_frame_sent``, ``media:first_packet``,
``media:playout_start``).

Candidates the agent's network interface may not reach (a browser also offers its LAN
and IPv6 addresses; a :class:`~voicelab.net.iface.LoopbackInterface` only reaches
127.0.0.0/8 and ::1) and names (mDNS ``.local``: the lab never resolves names) are
dropped from the offer and from trickled candidates before aioice sees them, so ICE
checks only go where the interface allows. A browser may still send a check *from*
such an address to the agent's loopback candidate (peer-reflexive); aioice answers it,
and the interface refuses the destination. The peers therefore get the agent's
interface through a thin adapter that drops (and counts, :attr:`WebRtcFront.dropped_sends`)
what the interface refuses, as a host firewall would, instead of raising inside
aioice's datagram callback.

This module is an asyncio adapter (it imports :mod:`asyncio`); it reads only the event
loop's clock (through ``iface.time()`` and the peers).
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import ipaddress
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .. import audio
from ..audio import to_float
from ..errors import ParameterError, VoicelabError
from ..net.iface import NetworkInterface
from .media import AudioSink, SourceTrack
from .peer import WEBRTC_CODECS, make_peer_connection, prefer_codec, selected_pair, stats_summary

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

__all__ = ["serve_webrtc", "WebRtcFront", "WebRtcCall", "EchoTrack", "choose_codec", "filter_candidates"]

_BY_ENCODING = {"opus": "opus", "pcmu": "pcmu", "pcma": "pcma", "g722": "g722"}
_EARLY_S = 0.0005  # as voicelab.webrtc.media: hand frames over half a timer tick early


# ---------------------------------------------------------------------------------------
# Offer inspection (pure)
# ---------------------------------------------------------------------------------------


def choose_codec(offer_sdp: str, accepted: Sequence[str]) -> str:
    """The codec of the first audio section, in the offer's order, that ``accepted`` has.

    Parameters
    ----------
    offer_sdp : str
        The caller's SDP offer.
    accepted : sequence of str
        Lab codec names the agent accepts (``"opus"``, ``"pcmu"``, ``"pcma"``,
        ``"g722"``; others are ignored: WebRTC does not carry them).

    Returns
    -------
    str
        A lab codec name.

    Raises
    ------
    ParameterError
        No audio section, or no codec in common.
    """
    if not isinstance(offer_sdp, str):
        raise ParameterError("the offer SDP must be a string")
    ok = {str(c).lower() for c in accepted} & set(WEBRTC_CODECS)
    in_audio = False
    order: list[str] = []
    names: dict[str, str] = {}
    for line in offer_sdp.splitlines():
        line = line.strip()
        if line.startswith("m="):
            if in_audio:
                break  # first audio section only
            parts = line[2:].split()
            in_audio = bool(parts) and parts[0] == "audio"
            order = parts[3:] if in_audio else []
        elif in_audio and line.startswith("a=rtpmap:"):
            m = re.match(r"a=rtpmap:(\d+)\s+([^/\s]+)", line)
            if m:
                names[m.group(1)] = m.group(2).lower()
    if not order:
        raise ParameterError("the offer has no audio section (m=audio); the agent answers audio calls")
    static = {"0": "pcmu", "8": "pcma", "9": "g722"}
    for pt in order:
        name = _BY_ENCODING.get(names.get(pt, static.get(pt, "")), None)
        if name is not None and name in ok:
            return name
    offered = [names.get(pt, static.get(pt, pt)) for pt in order]
    raise ParameterError(f"no codec in common: the offer has {offered[:12]}, the agent accepts {sorted(ok)}")


def _reachable(host: str, iface: Any) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a name (mDNS .local): the lab never resolves names
    check = getattr(iface, "check_address", None)
    if check is None:
        return True
    try:
        check((host, 9), "candidate address")
    except VoicelabError:
        return False
    return True


def _candidate_host(candidate: str) -> str | None:
    # candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
    parts = candidate.split()
    return parts[4] if len(parts) > 5 else None


def filter_candidates(sdp: str, iface: Any) -> tuple[str, list[str]]:
    """Drop ``a=candidate`` lines whose address ``iface`` may not reach.

    Parameters
    ----------
    sdp : str
    iface : NetworkInterface
        Its ``check_address`` (when it has one) decides; names are always dropped.

    Returns
    -------
    (str, list of str)
        The SDP without those lines, and the dropped addresses.
    """
    kept, dropped = [], []
    for line in sdp.split("\r\n") if "\r\n" in sdp else sdp.split("\n"):
        if line.startswith("a=candidate:"):
            host = _candidate_host(line[2:])
            if host is None or not _reachable(host, iface):
                dropped.append(str(host))
                continue
        kept.append(line)
    return ("\r\n" if "\r\n" in sdp else "\n").join(kept), dropped


# ---------------------------------------------------------------------------------------
# The peers' view of the agent's interface: refused destinations are dropped
# ---------------------------------------------------------------------------------------


class _DropTransport(asyncio.DatagramTransport):
    def __init__(self, inner: Any, owner: "_DropRefused") -> None:
        super().__init__()
        self._inner = inner
        self._owner = owner

    def sendto(self, data: bytes, addr: Any = None) -> None:  # noqa: D102
        try:
            self._inner.sendto(data, addr)
        except VoicelabError:  # the interface refuses this destination: a firewall drop
            self._owner.dropped_sends += 1

    def close(self) -> None:  # noqa: D102
        self._inner.close()

    def abort(self) -> None:  # noqa: D102
        abort = getattr(self._inner, "abort", None)
        (abort or self._inner.close)()

    def is_closing(self) -> bool:  # noqa: D102
        return self._inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:  # noqa: D102
        return self._inner.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:  # noqa: D102
        fn = getattr(self._inner, "get_write_buffer_size", None)
        return fn() if fn is not None else 0


class _DropShim(asyncio.DatagramProtocol):
    def __init__(self, inner: Any, owner: "_DropRefused") -> None:
        self.inner = inner
        self.owner = owner
        self.wrapped: _DropTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.wrapped = _DropTransport(transport, self.owner)
        self.inner.connection_made(self.wrapped)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.inner.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.inner.error_received(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)


class _DropRefused(NetworkInterface):
    """The agent's interface as its WebRTC peers see it (see the module docstring)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.dropped_sends = 0

    async def create_datagram_endpoint(self, protocol_factory: Any, local_addr: Any = None,
                                       remote_addr: Any = None) -> tuple[Any, Any]:
        holder: dict[str, _DropShim] = {}

        def factory() -> _DropShim:
            holder["shim"] = _DropShim(protocol_factory(), self)
            return holder["shim"]

        await self.inner.create_datagram_endpoint(factory, local_addr=local_addr, remote_addr=remote_addr)
        shim = holder["shim"]
        return shim.wrapped, shim.inner

    async def create_server(self, protocol_factory: Any, host: Any, port: int, ssl: Any = None) -> Any:
        return await self.inner.create_server(protocol_factory, host, port, ssl=ssl)

    async def create_connection(self, protocol_factory: Any, host: str, port: int, ssl: Any = None,
                                local_addr: Any = None, server_hostname: str | None = None) -> Any:
        return await self.inner.create_connection(protocol_factory, host, port, ssl=ssl, local_addr=local_addr,
                                                  server_hostname=server_hostname)

    def host_addresses(self) -> list[str]:
        return list(self.inner.host_addresses())

    def time(self) -> float:
        return self.inner.time()

    def free_port(self, kind: str = "udp", host: str | None = None) -> int:
        return self.inner.free_port(kind, host)

    def check_address(self, addr: Any, what: str = "address") -> Any:
        check = getattr(self.inner, "check_address", None)
        return check(addr, what) if check is not None else tuple(addr)


# ---------------------------------------------------------------------------------------
# Echo: the agent's played frames back into aiortc's sender
# ---------------------------------------------------------------------------------------


class EchoTrack(MediaStreamTrack):
    """An aiortc audio track that returns what the agent's playout played.

    :meth:`feed` receives each played frame at its playout slot time; frame ``k`` is
    handed to aiortc's sender at ``t0 + (k + 1) * frame`` (``t0``: the first slot), when
    it has finished playing, as :meth:`voicelab.rtp.live.LiveAudioStream.send_live`
    does for SIP.

    Parameters
    ----------
    sample_rate : int
        Hz of the frames (the codec's rate).
    frame_samples : int
        Samples per frame.

    Attributes
    ----------
    send_times : list of float
        Loop time at which each frame was handed over.
    send_lateness_s : list of float
        Hand-over time minus scheduled time, per frame (pacing error).
    """

    kind = "audio"

    def __init__(self, sample_rate: int, frame_samples: int) -> None:
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.frame_samples = int(frame_samples)
        self._queue: collections.deque[np.ndarray] = collections.deque()
        self._event = asyncio.Event()
        self._t0: float | None = None
        self._k = 0
        self._sent: list[np.ndarray] = []
        self.send_times: list[float] = []
        self.send_lateness_s: list[float] = []

    @property
    def t0(self) -> float | None:
        """Loop time of the first echoed sample (its playout slot), None before."""
        return self._t0

    def feed(self, frame: np.ndarray, when: float) -> None:
        """Hand over one played frame (int16) and its slot time (loop clock, s)."""
        if self._t0 is None:
            self._t0 = float(when)
        self._queue.append(np.asarray(frame, dtype=np.int16).reshape(-1))
        self._event.set()

    async def recv(self) -> Any:
        """The next echoed frame as an ``av.AudioFrame``, when it has finished playing."""
        import av

        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._event.clear()
            await self._event.wait()
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        when = self._t0 + (self._k + 1) * self.frame_samples / self.sample_rate  # type: ignore[operator]
        delay = when - _EARLY_S - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if self.readyState != "live":
            raise MediaStreamError
        chunk = self._next_chunk(loop.time())
        self._sent.append(chunk)
        self.send_times.append(loop.time())
        self.send_lateness_s.append(loop.time() - when)
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._k * self.frame_samples
        frame.time_base = fractions.Fraction(1, self.sample_rate)
        self._k += 1
        return frame

    def _next_chunk(self, now: float) -> np.ndarray:
        """The frame to hand over now (int16): the oldest fed one; subclasses make their own."""
        return self._queue.popleft()

    def stop(self) -> None:  # noqa: D102
        super().stop()
        self._event.set()

    def pacing_error_ms(self, q: float = 99.0) -> float:
        """Percentile ``q`` of the absolute hand-over error in ms (0 before any frame)."""
        if not self.send_lateness_s:
            return 0.0
        return float(np.percentile(np.abs(self.send_lateness_s), q) * 1000.0)

    def sent_audio(self) -> tuple[np.ndarray, float]:
        """(float samples handed to the sender, loop time of the first one)."""
        if not self._sent:
            return np.zeros(0), 0.0
        return to_float(np.concatenate(self._sent)), float(self._t0)  # type: ignore[arg-type]


class _EchoSink(AudioSink):
    """The playout's recording, which also feeds an :class:`EchoTrack`."""

    def __init__(self, sample_rate: int, track: EchoTrack) -> None:
        super().__init__(sample_rate)
        self.track = track

    def write(self, frame: np.ndarray, when: float, *, arrival: float | None = None) -> float:  # noqa: D102
        start = super().write(frame, when, arrival=arrival)
        self.track.feed(frame, when)
        return start


# ---------------------------------------------------------------------------------------
# One call
# ---------------------------------------------------------------------------------------


@dataclass
class _Mark:
    time: float
    source: str
    event: str
    detail: Mapping[str, Any]


class WebRtcCall:
    """One WebRTC call at the front: its signaling session, peer connection and media.

    Attributes
    ----------
    id : str
        The signaling session id.
    session : SignalingSession
    pc : LabPeerConnection
    codec : str
        Negotiated lab codec name.
    sample_rate : int
        Hz of the recordings (the codec's rate).
    clock_rate : int
        RTP clock rate of the codec in Hz (8000 for G.722).
    sink : AudioSink
        What the agent played (received audio) on the loop clock.
    track : SourceTrack or EchoTrack
        What the agent sent.
    dropped_candidates : list of str
        Remote candidate addresses dropped as unreachable for the interface.
    getstats : dict or None
        :func:`~voicelab.webrtc.peer.stats_summary` taken at hang-up.
    pair : dict or None
        The selected ICE pair at hang-up (:func:`~voicelab.webrtc.peer.selected_pair`).
    ended : bool
    end_reason : str or None
        The signaling session's end reason, or ``"ice_failed"``.
    """

    def __init__(self, session: Any, pc: Any, *, codec: str, sample_rate: int, sink: AudioSink, track: Any,
                 clock_rate: int | None = None) -> None:
        self.id = session.id
        self.session = session
        self.pc = pc
        self.codec = codec
        self.sample_rate = int(sample_rate)
        self.clock_rate = int(clock_rate if clock_rate is not None else sample_rate)
        self.sink = sink
        self.track = track
        self.dropped_candidates: list[str] = []
        self.getstats: dict[str, Any] | None = None
        self.pair: dict[str, Any] | None = None
        self.ended = False
        self.end_reason: str | None = None
        self._marks: list[_Mark] = []

    def mark(self, event: str, **detail: Any) -> None:
        """Add a media/agent event to the timeline, stamped now (loop clock)."""
        self._marks.append(_Mark(self.pc.iface.time(), "agent", event, detail))

    # -- recordings ------------------------------------------------------------------
    def sent_audio(self) -> tuple[np.ndarray, float]:
        """(float samples the agent sent at :attr:`sample_rate`, loop time of the first)."""
        return self.track.sent_audio()

    def received_audio(self) -> tuple[np.ndarray, float]:
        """(float samples the agent played at :attr:`sample_rate`, loop time of the first)."""
        return self.sink.received_audio()

    @property
    def playout(self) -> Any:
        """The receiver's :class:`~voicelab.webrtc.peer.LabPlayout` (None before media)."""
        for t in self.pc.getTransceivers():
            p = getattr(t.receiver, "lab_playout", None)
            if p is not None:
                return p
        return None

    # -- timeline --------------------------------------------------------------------
    @property
    def t_offer(self) -> float | None:
        """Loop time the offer arrived (s)."""
        return self.session.first("offer_received")

    def timeline(self) -> list[dict[str, Any]]:
        """Signaling, ICE/DTLS and media events of this call, in time order.

        Returns
        -------
        list of dict
            ``{"t_ms": ms since the offer arrived, "time": loop time (s), "source":
            "signaling" | "peer" | "agent", "event": str, "detail": dict}``.
        """
        rows: list[_Mark] = [_Mark(e.time, "signaling", e.kind, dict(e.detail)) for e in self.session.events]
        rows += [_Mark(t, "peer", e, {}) for t, e in self.pc.timeline]
        rows += list(self._marks)
        p = self.playout
        if p is not None and p.first_arrival is not None:
            rows.append(_Mark(p.first_arrival, "agent", "media:first_packet", {}))
        if p is not None and p.start_time is not None:
            rows.append(_Mark(p.start_time, "agent", "media:playout_start", {}))
        sent = getattr(self.track, "send_times", None)
        if sent:
            rows.append(_Mark(sent[0], "agent", "media:first_frame_sent", {}))
        t0 = self.t_offer
        if t0 is None:
            t0 = min((r.time for r in rows), default=0.0)
        rows.sort(key=lambda r: r.time)
        return [{"t_ms": (r.time - t0) * 1000.0, "time": r.time, "source": r.source, "event": r.event,
                 "detail": dict(r.detail)} for r in rows]

    @property
    def setup_ms(self) -> float | None:
        """Offer received -> the agent's peer ``connected`` (ms), None if it never was."""
        t0, t1 = self.t_offer, self.pc.event_time("connection:connected")
        return None if t0 is None or t1 is None else (t1 - t0) * 1000.0

    def summary(self) -> dict[str, Any]:
        """Plain numbers about the call (setup, ICE path, packets, playout outcomes)."""
        p = self.playout
        span = {}
        for name, a, b in (("ice_gathering_ms", "gather:gathering", "gather:completed"),
                           ("ice_connect_ms", "ice:checking", "ice:completed"),
                           ("dtls_ms", "dtls:connecting", "dtls:connected")):
            ta, tb = self.pc.event_time(a), self.pc.event_time(b)
            span[name] = None if ta is None or tb is None else (tb - ta) * 1000.0
        return {
            "session": self.id,
            "codec": self.codec,
            "sample_rate": self.sample_rate,
            "setup_ms": self.setup_ms,
            **span,
            "ice_path": None if self.pair is None else {"agent": self.pair["local"]["type"],
                                                        "caller": self.pair["remote"]["type"]},
            "selected_pair": self.pair,
            "dropped_candidates": list(self.dropped_candidates),
            "outcomes": dict(p.outcomes) if p is not None else None,
            "packets_received": p.packets if p is not None else 0,
            "getstats": self.getstats,
            "end_reason": self.end_reason,
        }

    def __repr__(self) -> str:
        return f"<WebRtcCall {self.id} {self.codec} {self.pc.connectionState}{' ended' if self.ended else ''}>"


# ---------------------------------------------------------------------------------------
# The front
# ---------------------------------------------------------------------------------------


class WebRtcFront:
    """The agent's WebRTC front (made and started by :func:`serve_webrtc`).

    Attributes
    ----------
    agent : voicelab.agent.Agent
    server : SignalingServer
    iface : NetworkInterface
        The agent's.
    calls : dict of str -> WebRtcCall
        Calls in progress, by session id.
    finished : OrderedDict of str -> WebRtcCall
        Ended calls (at most ``agent.keep_recordings``; oldest dropped first), with their
        recordings and timelines.
    peers_created : int
        Peer connections made (one per accepted offer); a refused token makes none.
    calls_connected, calls_ended : int
    errors : list of str
        Offers the agent could not answer, and hang-up problems.
    """

    def __init__(self, agent: Any, *, secret: bytes | None, ice_servers: Sequence[Any],
                 codec_params: Mapping[str, Mapping[str, Any]] | None, token_ttl_s: float,
                 allowed_origins: Sequence[str]) -> None:
        from .signaling import SignalingServer

        self.agent = agent
        self.iface = agent.iface
        self._peer_iface = _DropRefused(agent.iface)
        self.ice_servers = list(ice_servers) if not isinstance(ice_servers, (str, dict)) else [ice_servers]
        self.codec_params = {str(k).lower(): dict(v) for k, v in (codec_params or {}).items()}
        self.server = SignalingServer(self.iface, secret=secret if secret is not None else os.urandom(32),
                                      on_offer=self._on_offer, token_ttl_s=token_ttl_s,
                                      allowed_origins=allowed_origins)
        self.calls: dict[str, WebRtcCall] = {}
        self.finished: OrderedDict[str, WebRtcCall] = OrderedDict()
        self.peers_created = 0
        self.calls_connected = 0
        self.calls_ended = 0
        self.errors: list[str] = []
        self._tasks: set[asyncio.Task] = set()
        self._waiters: list[tuple[str, int, asyncio.Future]] = []
        self._closing = False

    # -- addresses -------------------------------------------------------------------
    @property
    def dropped_sends(self) -> int:
        """Datagrams the peers tried to send where the agent's interface does not reach
        (answers to a browser's checks from its LAN address); dropped, not raised."""
        return self._peer_iface.dropped_sends

    @property
    def url(self) -> str:
        """Base URL of the signaling server and browser page, e.g. ``http://127.0.0.1:8080``."""
        return self.server.url

    @property
    def ws_url(self) -> str:
        """The signaling WebSocket URL (without token)."""
        return self.server.ws_url

    @property
    def local_addr(self) -> tuple[str, int] | None:
        """``(host, port)`` the signaling server listens on."""
        return self.server.local_addr

    def issue_token(self, subject: str = "lab") -> str:
        """A token for an in-process caller (what ``POST /token`` returns)."""
        return self.server.issue(subject)

    # -- waiting ---------------------------------------------------------------------
    def connected(self, n: int) -> asyncio.Future:
        """A future resolved once ``n`` WebRTC calls have connected at this front."""
        return self._wait("calls_connected", n)

    def ended(self, n: int) -> asyncio.Future:
        """A future resolved once ``n`` WebRTC calls have ended at this front."""
        return self._wait("calls_ended", n)

    def _wait(self, counter: str, n: int) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((counter, n, fut))
        self._notify()
        return fut

    def _notify(self) -> None:
        keep = []
        for counter, n, fut in self._waiters:
            if fut.done():
                continue
            if getattr(self, counter) >= n:
                fut.set_result(getattr(self, counter))
            else:
                keep.append((counter, n, fut))
        self._waiters = keep

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- answering -------------------------------------------------------------------
    def _track_for(self, codec: Any) -> tuple[Any, AudioSink]:
        agent, rate = self.agent, int(codec.sample_rate)
        if agent.mode == "echo":
            track = EchoTrack(rate, int(codec.frame_samples))
            return track, _EchoSink(rate, track)
        if agent.mode == "pipeline":  # the agent (endpoint layer) builds it: voicelab.pipeline.fronts
            return agent.pipeline_media(rate, int(codec.frame_samples))
        if agent.mode == "play":
            x16 = getattr(agent, "_x", None)
            if x16 is None:
                raise VoicelabError("the agent has no speech loaded; start the agent before serve_webrtc")
            x = audio.resample(np.asarray(x16, dtype=np.float64), 16000, rate) if rate != 16000 else x16
            return SourceTrack(x, rate), AudioSink(rate)
        return SourceTrack(np.zeros(0), rate), AudioSink(rate)  # record: silence back

    async def _on_offer(self, session: Any, offer_sdp: str) -> str:
        from aiortc import RTCSessionDescription

        from .. import codecs

        if self._closing:
            raise VoicelabError("the agent is shutting down")
        busy = len(self.calls) + len(getattr(self.agent, "streams", {}))
        if busy >= self.agent.max_calls:
            raise VoicelabError(f"busy: the agent has {busy} calls (max_calls={self.agent.max_calls})")
        codec = choose_codec(offer_sdp, self.agent.codecs)
        params = self.codec_params.get(codec, {})
        facts = codecs.get(codec, **params)
        sdp, dropped = filter_candidates(offer_sdp, self.iface)
        if self.agent.mode == "bridge":  # a gateway: the other leg is set up before we answer
            track, sink = await self.agent.open_leg(session.id, facts)
        else:
            track, sink = self._track_for(facts)
        pc = make_peer_connection(self._peer_iface, ice_servers=self.ice_servers, codec=codec, codec_params=params,
                                  jitter_buffer=self.agent.jitter_buffer, forward_to_track=False, sink=sink)
        self.peers_created += 1
        call = WebRtcCall(session, pc, codec=codec, sample_rate=int(facts.sample_rate), sink=sink, track=track,
                          clock_rate=int(facts.clock_rate))
        call.dropped_candidates = dropped
        self.calls[session.id] = call
        pc.on("connectionstatechange", lambda: self._on_state(call))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            transceivers = [t for t in pc.getTransceivers() if t.kind == "audio"]
            if not transceivers:
                raise ParameterError("the offer has no audio section the agent could accept")
            prefer_codec(transceivers[0], codec)
            pc.addTrack(track)
            await pc.setLocalDescription(await pc.createAnswer())
            answer = pc.localDescription.sdp
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self.errors.append(f"offer of session {session.id}: {type(exc).__name__}: {exc}"[:300])
            self.calls.pop(session.id, None)
            track.stop()
            await asyncio.shield(pc.close())
            if self.agent.mode == "bridge":
                await asyncio.shield(self.agent.close_leg(session.id))
            raise
        session.on_candidate = lambda s, c: self._on_candidate(call, c)
        session.on_bye = lambda s: self._finish(call, s.end_reason)
        return answer

    async def _on_candidate(self, call: WebRtcCall, cand: Mapping[str, Any] | None) -> None:
        from aiortc.sdp import candidate_from_sdp

        if call.ended:
            return
        if cand is None:
            await call.pc.addIceCandidate(None)
            return
        text = str(cand.get("candidate", ""))
        if not text:  # an empty candidate string also means "end of candidates" in browsers
            await call.pc.addIceCandidate(None)
            return
        text = text[len("candidate:"):] if text.startswith("candidate:") else text
        host = _candidate_host(text)
        if host is None or not _reachable(host, self.iface):
            call.dropped_candidates.append(str(host))
            return
        try:
            c = candidate_from_sdp(text)
        except (ValueError, IndexError) as exc:
            self.errors.append(f"session {call.id}: unparsable candidate ({exc})"[:300])
            return
        c.sdpMid = cand.get("sdpMid")
        c.sdpMLineIndex = cand.get("sdpMLineIndex")
        await call.pc.addIceCandidate(c)

    def _on_state(self, call: WebRtcCall) -> None:
        state = call.pc.connectionState
        if state == "connected" and not call.ended:
            if isinstance(call.track, SourceTrack) and call.track.t0 is None:
                call.track.start()
                call.mark("media:send_start")
            self.calls_connected += 1
            self._notify()
        elif state == "failed" and not call.ended:
            call.end_reason = "ice_failed"
            self._spawn(call.session.bye())  # on_bye (-> _finish) runs from there

    async def _finish(self, call: WebRtcCall, reason: str | None) -> None:
        """Hang up one call: stats, close the peer, keep the recording, count it."""
        if call.ended:
            return
        call.ended = True
        call.end_reason = call.end_reason or reason
        self.calls.pop(call.id, None)
        try:
            if call.pc.connectionState == "connected":
                report = await call.pc.getStats()
                call.getstats = stats_summary(report, clock_rate=call.clock_rate)
                call.pair = selected_pair(call.pc)
        except Exception as exc:  # noqa: BLE001 - statistics are a bonus; the hang-up must happen
            self.errors.append(f"session {call.id}: getStats failed: {type(exc).__name__}: {exc}"[:300])
        call.track.stop()
        await call.pc.close()
        if self.agent.mode == "bridge":  # a gateway: hang up the other leg too
            await self.agent.close_leg(call.id)
        self._keep(call)
        self.calls_ended += 1
        self._notify()

    def _keep(self, call: WebRtcCall) -> None:
        agent = self.agent
        sent, _ = call.sent_audio()
        received, _ = call.received_audio()
        if agent.mode == "record":
            n = len(agent.recorded_files) + 1
            path = Path(agent.mode_arg) / f"{getattr(agent, 'record_prefix', '')}{n:04d}-webrtc-{call.id}.wav"
            try:
                agent.recorded_files.append(audio.write_wav(path, received, call.sample_rate))
            except VoicelabError as exc:  # e.g. nothing arrived: nothing to write
                self.errors.append(f"session {call.id}: recording not written: {exc}"[:300])
        limit = max(0, int(agent.keep_recordings))
        agent.recordings[f"webrtc:{call.id}"] = (sent, received, call.sample_rate)
        while len(agent.recordings) > limit:
            agent.recordings.popitem(last=False)
        self.finished[call.id] = call
        while len(self.finished) > limit:
            self.finished.popitem(last=False)

    def timeline(self, session_id: str) -> list[dict[str, Any]]:
        """The timeline of a call in progress or kept (see :meth:`WebRtcCall.timeline`).

        Raises
        ------
        ParameterError
            Unknown (or no longer kept) session id.
        """
        call = self.calls.get(session_id) or self.finished.get(session_id)
        if call is None:
            raise ParameterError(f"no WebRTC call {session_id!r} at this front; known: "
                                 f"{sorted([*self.calls, *self.finished])[:10]}")
        return call.timeline()

    # -- lifecycle -------------------------------------------------------------------
    async def close(self) -> None:
        """Stop listening, hang up every call (recordings kept), free every socket and task."""
        if self._closing:
            return
        self._closing = True
        await self.server.close()  # ends every session: on_bye -> _finish
        for call in list(self.calls.values()):
            await self._finish(call, "server_closed")
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for _, _, fut in self._waiters:
            if not fut.done():
                fut.cancel()
        self._waiters = []

    async def __aenter__(self) -> "WebRtcFront":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        where = self.url if self.local_addr else "not started"
        return f"<WebRtcFront {where} calls={len(self.calls)} ended={self.calls_ended}>"


async def serve_webrtc(
    agent: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    secret: bytes | None = None,
    ice_servers: Sequence[Any] = (),
    codec_params: Mapping[str, Mapping[str, Any]] | None = None,
    token_ttl_s: float = 60.0,
    allowed_origins: Sequence[str] = (),
) -> WebRtcFront:
    """Answer WebRTC callers for a started :class:`~voicelab.agent.Agent`.

    Parameters
    ----------
    agent : voicelab.agent.Agent
        Started (``await agent.start()`` or ``async with agent``): its network
        interface, mode, codecs, jitter buffer, speech and recordings are shared.
    host, port : str, int
        Where the signaling server listens (port 0: any free port; read ``.url``).
    secret : bytes, optional
        Token HMAC key (>= 16 bytes); default 32 fresh random bytes.
    ice_servers : sequence
        STUN/TURN servers for the agent's peers (IP literals; see
        :func:`~voicelab.webrtc.peer.make_peer_connection`). None by default: offline.
    codec_params : dict, optional
        Per-codec encoder options, e.g. ``{"opus": {"bitrate": 32000, "fec": True,
        "packet_loss_perc": 5}}``.
    token_ttl_s : float
        Lifetime of issued tokens (s).
    allowed_origins : sequence of str
        Extra browser origins allowed (the server's own and http://127.0.0.1 /
        http://localhost on any port always are).

    Returns
    -------
    WebRtcFront
        Listening; ``await front.close()`` stops it.

    Raises
    ------
    ParameterError
        The agent is not started, accepts no WebRTC codec, or a bad server/option.

    Examples
    --------
    >>> async with Agent(mode="echo", codecs=["opus"]) as agent:      # doctest: +SKIP
    ...     front = await serve_webrtc(agent, port=8080)
    ...     print("open", front.url)
    """
    from .. import codecs
    from ..rtp.jitterbuffer import parse_jitter_buffer

    if getattr(agent, "iface", None) is None or getattr(agent, "ua", None) is None:
        raise ParameterError("start the agent first ('async with Agent(...) as agent' or 'await agent.start()'), "
                             "then call serve_webrtc(agent)")
    usable = [c for c in agent.codecs if str(c).lower() in WEBRTC_CODECS]
    if not usable:
        raise ParameterError(f"the agent accepts {agent.codecs}, none of which WebRTC carries; add one of "
                             f"{sorted(WEBRTC_CODECS)}")
    if codec_params is not None and not isinstance(codec_params, Mapping):
        raise ParameterError(f"codec_params must be a dict such as {{'opus': {{'bitrate': 32000}}}}, got {codec_params!r:.80}")
    for name, params in (codec_params or {}).items():
        if str(name).lower() not in WEBRTC_CODECS or not isinstance(params, Mapping):
            raise ParameterError(f"codec_params keys must be WebRTC codecs {sorted(WEBRTC_CODECS)} with dict values, "
                                 f"got {name!r}: {params!r:.60}")
        codecs.get(str(name).lower(), **dict(params))  # bad options fail now, not at the first call
    parse_jitter_buffer(agent.jitter_buffer)
    for c in usable:  # load the codecs (libopus etc.) now, not inside the first offer
        codecs.get(c)
    # validate the servers, and run aiortc's offer path once (imports, first-use set-up:
    # about 0.5 s here) so that the first caller does not wait for it
    await make_peer_connection(agent.iface, ice_servers=ice_servers, codec=usable[0]).close()
    probe = make_peer_connection(_DropRefused(agent.iface), codec=usable[0])  # no server contacted
    try:
        probe.addTransceiver("audio")
        await probe.setLocalDescription(await probe.createOffer())
    finally:
        await probe.close()
    front = WebRtcFront(agent, secret=secret, ice_servers=ice_servers, codec_params=codec_params,
                        token_ttl_s=token_ttl_s, allowed_origins=allowed_origins)
    await front.server.start(host, port)
    return front
