"""A SIP front for media-stream voice agents: phone -> SIP -> this bridge -> the agent's WebSocket.

Voice-agent deployments reach the telephone network through a platform: the carrier's
SIP call lands on the platform's media servers, which answer it and open a WebSocket to
the agent, streaming the call's 8 kHz mu-law audio as JSON media messages (Twilio Media
Streams; :mod:`voicelab.wsmedia.protocol`) and playing what the agent streams back.
Pipecat bots behind its Twilio serializer are deployed exactly so. This bridge is that
platform, made of the lab's stacks:

- the **SIP leg**: a SIP UAS (:class:`voicelab.agent.Agent`'s: UDP/TCP/TLS/WS
  signalling, digest auth, overload control, media timeout, latching) answers with G.711
  (PCMU or PCMA) and opens a :class:`voicelab.rtp.live.LiveAudioStream` with its own
  jitter buffer and PLC;
- the **WebSocket leg**: for every answered call a
  :class:`voicelab.wsmedia.live.MediaStreamClient` connects to ``ws_url`` and sends
  ``connected`` + ``start``.

Audio crosses per frame on the loop clock, as a platform's media server does it:

``up`` (caller -> agent)
    each 20 ms frame the SIP leg's playout *played* (after its jitter buffer, decoder
    and PLC, so a lost packet is concealed, not missing) is mu-law encoded and sent as
    one ``media`` message at once;
``down`` (agent -> caller)
    the agent's ``media`` messages go into the WebSocket leg's jitter buffer (an agent
    may send faster than real time: Pipecat's WebSocket output runs at twice real time)
    and each frame it plays is sent at once as the next RTP packet. The agent's
    ``clear`` (barge-in) empties that buffer; its ``mark`` messages are returned once the
    audio before them has been played, as the platform does.

Hanging up either side ends the other: the caller's BYE closes the WebSocket (``stop``
first); the agent closing its WebSocket sends a BYE. A WebSocket that cannot be opened
refuses nothing (the call was already answered): the call is hung up and the reason
kept in :attr:`MediaStreamBridge.errors`.

Measured: every :class:`BridgeCall` keeps, per frame, where it crossed on the loop
clock (RTP sequence <-> media ``chunk`` in both directions), so a caller in the same
process can split a turn's network time into SIP leg, bridge and WebSocket leg
(:func:`voicelab.pipecat_turns.pipecat_call` with ``transport="sip"``).

This module is an asyncio adapter (endpoint layer).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from .agent import Agent
from .errors import ParameterError, VoicelabError

__all__ = ["MediaStreamBridge", "BridgeCall", "parse_ws_url", "BRIDGE_CODECS"]

#: What the SIP leg accepts: 8 kHz G.711, 20 ms, the media stream's own format (no resampling).
BRIDGE_CODECS = ("pcmu", "pcma")


def parse_ws_url(url: str) -> tuple[str, int, str]:
    """``ws://host:port/path`` -> (host, port, path); ParameterError otherwise."""
    if not isinstance(url, str):
        raise ParameterError(f"the agent's WebSocket URL must be a string, got {url!r}")
    u = urlsplit(url)
    if u.scheme != "ws" or not u.hostname:
        raise ParameterError(f"the agent's WebSocket URL must look like ws://HOST:PORT/PATH, got {url!r}")
    try:
        port = u.port or 80
    except ValueError:
        raise ParameterError(f"bad port in the WebSocket URL {url!r}") from None
    return u.hostname, port, u.path or "/"


@dataclass
class BridgeCall:
    """One bridged call: the two legs and where each frame crossed (loop times, s)."""

    call_id: str
    stream: Any = None  # LiveAudioStream, the SIP leg
    client: Any = None  # MediaStreamClient, the WebSocket leg
    #: media chunk sent to the agent -> RTP sequence number of the caller's packet it carried
    up_chunk_to_seq: dict[int, int | None] = field(default_factory=dict)
    #: RTP sequence number sent to the caller -> the agent's media chunk it carried
    down_seq_to_chunk: dict[int, int | None] = field(default_factory=dict)
    setup_ms: float | None = None  # answer -> WebSocket open and 'start' written
    hung_up_by: str | None = None
    ended: bool = False
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        c = self.client
        return {"call_id": self.call_id, "setup_ms": self.setup_ms, "hung_up_by": self.hung_up_by,
                "frames_up": len(self.up_chunk_to_seq), "frames_down": len(self.down_seq_to_chunk),
                "clears": len(c.media.cleared) if c is not None and c.media is not None else 0,
                "errors": list(self.errors)}  # fmt: skip


class MediaStreamBridge(Agent):
    """Answer SIP calls and stream each to a media-stream WebSocket agent (see the module docstring).

    Parameters
    ----------
    ws_url : str
        The agent, ``ws://HOST:PORT/PATH`` (e.g. a Pipecat bot's ``ws://127.0.0.1:8765/media``).
    host, port, transport : as for :class:`voicelab.agent.Agent`
        Where the SIP UAS listens.
    codecs : list of str
        Accepted on the SIP leg (PCMU and/or PCMA).
    jitter_buffer : str
        The SIP leg's buffer (caller -> agent).
    ws_jitter_buffer : str
        The WebSocket leg's buffer (agent -> caller).
    ws_connect_timeout : float
        Seconds to open the WebSocket.
    iface, seed, max_calls, auth, ... :
        Further :class:`~voicelab.agent.Agent` options.

    Attributes
    ----------
    calls : dict
        Call-ID -> :class:`BridgeCall` (live and finished; bounded by ``keep_recordings``).
    """

    def __init__(self, ws_url: str, *, codecs: list[str] | None = None, jitter_buffer: str = "fixed:40",
                 ws_jitter_buffer: str = "fixed:40", ws_connect_timeout: float = 10.0, **agent_options: Any) -> None:  # fmt: skip
        self.ws_host, self.ws_port, self.ws_path = parse_ws_url(ws_url)
        self.ws_url = ws_url
        cs = [c.lower() for c in (codecs or ["pcmu", "pcma"])]
        bad = [c for c in cs if c not in BRIDGE_CODECS]
        if bad or not cs:
            raise ParameterError(f"the bridge's SIP leg carries {' or '.join(BRIDGE_CODECS)} (the media stream's "
                                 f"8 kHz G.711), got {', '.join(bad) or 'none'}")  # fmt: skip
        from .rtp.jitterbuffer import parse_jitter_buffer

        parse_jitter_buffer(ws_jitter_buffer)  # ParameterError now
        if "mode" in agent_options:
            raise ParameterError("the bridge has no mode: every call is streamed to ws_url")
        super().__init__(codecs=cs, mode="echo", jitter_buffer=jitter_buffer, **agent_options)
        self.ws_jitter_buffer = ws_jitter_buffer
        self.ws_connect_timeout = float(ws_connect_timeout)
        self.calls: dict[str, BridgeCall] = {}
        self._bridge_tasks: set[asyncio.Task] = set()

    # Agent hooks ----------------------------------------------------------------------
    async def _open(self, call: Any, port: int) -> None:
        """The SIP call is answered: open its RTP stream and the WebSocket, and wire them."""
        from .rtp.live import LiveAudioStream
        from .wsmedia import protocol as P
        from .wsmedia.live import MediaStreamClient

        loop = asyncio.get_running_loop()
        t_answer = loop.time()
        latch_hosts = None
        if self.latching is True:
            latch_hosts = {call.media.remote_address}
            if call.signalling_addr is not None:
                latch_hosts.add(str(call.signalling_addr[0]))
        s = LiveAudioStream.for_media(self.iface, call.media, local_addr=(self.address[0], port),
                                      jitter_buffer=self.jitter_buffer, latching=bool(self.latching), source_filter=False,
                                      latch_hosts=latch_hosts, seed=self.seed + self.calls_answered,
                                      cname="bridge@voicelab", track=True)  # fmt: skip
        bc = BridgeCall(call.call_id, stream=s)
        self.calls[call.call_id] = bc
        while len(self.calls) > max(1, self.keep_recordings):
            oldest = next(iter(self.calls))
            if not self.calls[oldest].ended:
                break
            self.calls.pop(oldest)
        self.streams[call.id] = s
        self._calls[call.id] = call
        self._opened_at[call.id] = t_answer
        await s.open()
        if call.over:
            return
        client = MediaStreamClient(self.iface, (self.ws_host, self.ws_port), path=self.ws_path,
                                   jitter_buffer=self.ws_jitter_buffer, seed=self.seed + self.calls_answered)  # fmt: skip
        bc.client = client
        try:
            await asyncio.wait_for(client.connect(timeout=self.ws_connect_timeout), self.ws_connect_timeout)
        except (asyncio.TimeoutError, OSError, VoicelabError) as exc:
            why = "timed out" if isinstance(exc, asyncio.TimeoutError) else str(exc) or type(exc).__name__
            bc.errors.append(f"WebSocket to {self.ws_url}: {why}"[:300])
            self.errors.append(f"call {call.call_id}: WebSocket to {self.ws_url}: {why}"[:300])
            bc.hung_up_by = "bridge"
            self._hang_up(call)
            return
        bc.setup_ms = (loop.time() - t_answer) * 1000.0
        media = client.media
        media.first_sequence = 1  # type: ignore[union-attr]  # chunks count from 1
        tx = s.tx

        def up(when: float, frame: np.ndarray) -> None:  # SIP leg played a frame -> one media message
            if bc.ended:
                return
            chunk = media.send_payload(P.mulaw_encode(np.asarray(frame, dtype=np.int16)), loop.time())  # type: ignore[union-attr]
            bc.up_chunk_to_seq[chunk] = s.last_played_seq

        def down(frame: np.ndarray, when: float) -> None:  # WebSocket leg played a frame -> one RTP packet
            if bc.ended:
                return
            seq = s.send_payload(tx.encode(np.asarray(frame, dtype=np.int16)))
            bc.down_seq_to_chunk[seq] = media.last_played_chunk  # type: ignore[union-attr]

        s.on_played = up
        media.on_played = down  # type: ignore[union-attr]
        task = loop.create_task(self._watch_ws(call, bc))
        self._bridge_tasks.add(task)
        task.add_done_callback(self._bridge_tasks.discard)

    async def _watch_ws(self, call: Any, bc: BridgeCall) -> None:
        """The agent closed its WebSocket: hang up the SIP leg."""
        await bc.client.wait_closed()
        if bc.client.error is not None:
            bc.errors.append(f"the agent broke the media-streams protocol: {bc.client.error}"[:300])
        if not bc.ended and not call.over:
            bc.hung_up_by = "agent"
            self._hang_up(call)

    async def _handle(self, ev: Any) -> None:
        from .sip.ua import CallCancelled, CallEnded, CallFailed

        if isinstance(ev, (CallEnded, CallFailed, CallCancelled)):
            bc = self.calls.get(ev.call.call_id)
            if bc is not None and not bc.ended:
                bc.ended = True
                bc.hung_up_by = bc.hung_up_by or "caller"
                if bc.client is not None:
                    await bc.client.stop()
        await super()._handle(ev)

    async def close(self) -> None:
        """Hang up nothing more: stop every WebSocket leg, then the SIP side (as :meth:`Agent.close`)."""
        for bc in self.calls.values():
            if not bc.ended:
                bc.ended = True
                if bc.client is not None:
                    await bc.client.stop()
        if self._bridge_tasks:
            await asyncio.gather(*self._bridge_tasks, return_exceptions=True)
        await super().close()
