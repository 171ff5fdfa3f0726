"""Turns against the Pipecat bot, measured at the caller's ear like the lab's agent.

The caller is the lab's: the same :class:`voicelab.turns.ConversationDriver` plays the
same utterances and listens for each reply, and :func:`voicelab.turns.analyse_turns` /
:func:`~voicelab.turns.summarise_turns` turn what it heard into ``turn.*`` figures. The
far end is :class:`voicelab.pipecat_bot.PipecatBot`:

``ws``
    the lab's :class:`~voicelab.wsmedia.live.MediaStreamClient` (a telephony platform's
    media stream) against Pipecat's WebSocket server + Twilio serializer. Both ends stamp
    their chunks on the shared loop clock, so the breakdown of the lab's agent is
    computed here too (no agent jitter buffer: Pipecat feeds frames straight to its VAD).
``webrtc``
    a plain aiortc peer (Opus) that POSTs its offer to the bot's ``/api/offer``. The
    caller hears a frame when aiortc's receiver hands it over (aiortc's own jitter
    buffer; no lab playout), so ``total_ms`` is measured but the per-hop breakdown is
    not (RTP sequence numbers are not tied to the loop clock on this path): every turn
    says so in ``reason``.

Beside the caller-side ``total_ms`` each record carries ``pipecat_ms``, Pipecat's own
figure (:class:`~pipecat.observers.user_bot_latency_observer.UserBotLatencyObserver`:
the VAD's stop time minus ``stop_secs`` -> ``BotStartedSpeakingFrame``), and
``pipecat_diff_ms = total_ms - pipecat_ms``: what the framework's observer does not see
(the caller's packetization, both networks, the caller's buffer, and the gap between
the VAD's estimate of the end of speech and the true one).
"""

from __future__ import annotations

import asyncio
import fractions
from types import SimpleNamespace
from typing import Any

import numpy as np

from .errors import ParameterError, PeerTimeoutError, RemoteProtocolError
from .turns import ConversationDriver, Utterance, _pct, analyse_turns, load_utterances, summarise_turns

__all__ = ["pipecat_call"]


async def pipecat_call(
    *,
    transport: str = "ws",
    turns: int = 5,
    stop_ms: float = 300.0,
    llm_ttft_s: float = 0.4,
    llm_sigma: float = 0.35,
    jitter_buffer: str = "fixed:60",
    reply_timeout_s: float = 8.0,
    replies: str = "lab",
    reply_end_silence_s: float = 0.9,
    gap_s: float = 0.3,
    seed: int = 0,
    utterances: list[Utterance] | None = None,
) -> dict[str, Any]:
    """A conversation of ``turns`` utterances with a Pipecat bot on loopback.

    Parameters
    ----------
    transport : {"ws", "webrtc"}
    turns : int
    stop_ms : float
        The bot's Silero VAD ``stop_secs``, ms.
    llm_ttft_s, llm_sigma : float
        The stand-in LLM's modelled time to first token (median, s; log-normal sigma).
    jitter_buffer : str
        The caller's jitter buffer (``ws`` only).
    reply_timeout_s : float
    replies : {"lab", "short"}
        The stand-in LLM's script (:data:`voicelab.pipecat_bot.REPLIES`).
    reply_end_silence_s, gap_s : float
        The caller: silence that ends a reply; pause before the next utterance.
    seed : int
    utterances : list of Utterance, optional

    Returns
    -------
    dict
        ``turn.*`` statistics as :func:`voicelab.turns.pipeline_call`, plus
        ``turn.pipecat_ms.*`` and ``turn.pipecat_diff_ms.*``; ``turns`` (records),
        ``agent`` (the bot's per-turn stage times) and ``bot`` (its set-up).
    """
    from .pipecat_bot import TRANSPORTS, PipecatBot

    if transport not in TRANSPORTS:
        raise ParameterError(f"the Pipecat bot is called over 'ws' or 'webrtc', got {transport!r}")
    utts = list(utterances) if utterances is not None else load_utterances(turns)
    driver_opts = dict(reply_timeout_s=reply_timeout_s, reply_end_silence_s=reply_end_silence_s, gap_s=gap_s)
    async with PipecatBot(transport, stop_ms=stop_ms, llm_ttft_s=llm_ttft_s, llm_sigma=llm_sigma, replies=replies,
                          seed=seed) as bot:  # fmt: skip
        if transport == "ws":
            records, setup = await _ws(bot, utts, jitter_buffer=jitter_buffer, seed=seed, driver_opts=driver_opts)
        else:
            records, setup = await _webrtc(bot, utts, driver_opts=driver_opts)
        summary = bot.summary()
        desc = bot.describe()
    _attach_pipecat(records, summary)
    out: dict[str, Any] = {"agent_kind": "pipecat", "transport": transport, **setup, "stop_ms": float(stop_ms),
                           "llm": desc["llm"], "bot": desc, "turns_requested": turns}  # fmt: skip
    out.update(summarise_turns(records))
    for key in ("pipecat", "pipecat_diff"):
        vals = [r[f"{key}_ms"] for r in records if r.get(f"{key}_ms") is not None]
        for k, v in _pct(vals).items():
            out[f"turn.{key}_ms.{k}"] = v
    # Pipecat's per-service metrics frames (enable_metrics): medians per kind and service
    groups: dict[str, list[float]] = {}
    for m in summary.get("pipecat_metrics", []):
        groups.setdefault(f"{m['kind'].replace('MetricsData', '').lower()}.{m['processor'].split('#')[0]}", []).append(m["ms"])
    out["pipecat_metrics_ms.p50"] = {k: float(np.median(v)) for k, v in sorted(groups.items())}
    out["turns"] = records
    out["agent"] = summary["turns"]
    if any(u.synthetic for u in utts):
        out["warnings"] = ["caller utterances are eSpeak NG speech (no natural corpus found): set VOICELAB_DATA"]
    return out


def _attach_pipecat(records: list[dict], summary: dict) -> None:
    """Put Pipecat's own figure beside each caller-side total (matched by the agent turn)."""
    agent = summary.get("turns", [])
    for r in records:
        # analyse_turns matched an agent turn when it set agent_reason; find it again by server_ms
        a = next((x for x in agent if x.get("server_ms") is not None and x.get("server_ms") == r.get("server_ms")), None)
        if a is None or a.get("pipecat_ms") is None:
            continue
        r["pipecat_ms"] = a["pipecat_ms"]
        if r.get("total_ms") is not None:
            r["pipecat_diff_ms"] = r["total_ms"] - a["pipecat_ms"]


def _budget(driver: ConversationDriver, utts: list[Utterance]) -> float:
    return sum(len(u.samples) / 16000 + driver.reply_timeout_s + 2.0 for u in utts) + 5.0


async def _ws(bot: Any, utts: list[Utterance], *, jitter_buffer: str, seed: int, driver_opts: dict) -> tuple[list, dict]:
    from .net.iface import LoopbackInterface
    from .wsmedia.live import MediaStreamClient

    ifc = LoopbackInterface(asyncio.get_running_loop())
    client = MediaStreamClient(ifc, bot.address, jitter_buffer=jitter_buffer, seed=seed)
    try:
        await client.connect()
        media = client.media
        media.first_sequence = 1  # type: ignore[union-attr]  # chunk numbers count from 1
        driver = ConversationDriver(utts, sample_rate=8000, frame_ms=20, **driver_opts)
        media.on_played = lambda f, w: driver.on_played(f, w, media.last_played_chunk)  # type: ignore[union-attr]
        media.send_live(driver.source)  # type: ignore[union-attr]
        try:
            await asyncio.wait_for(asyncio.shield(driver.done), _budget(driver, utts))
        except asyncio.TimeoutError:
            pass  # turns without an answer are recorded as such
        await client.stop()
        tl = bot.sessions[-1]
        agent_stream = SimpleNamespace(send_times=tl.send_times, arrivals=tl.arrivals, played_at=tl.played_at)
        records = analyse_turns(driver, media, agent_stream, tl.summary())
        if client.error is not None:
            raise RemoteProtocolError(f"the Pipecat bot broke the media-streams protocol: {client.error}")
        setup = {"codec": "pcmu", "jitter_buffer": jitter_buffer, "net": "loopback", "agent_errors": list(tl.errors)}
        return records, setup
    finally:
        await client.stop()


class _LiveTrack:
    """An aiortc audio track fed by the driver's send clock (48 kHz, 20 ms, on the loop clock)."""

    RATE, F = 48000, 960

    def __new__(cls, driver: ConversationDriver) -> Any:
        from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

        class Track(MediaStreamTrack):
            kind = "audio"

            def __init__(self) -> None:
                super().__init__()
                self.t0: float | None = None
                self.k = 0

            async def recv(self) -> Any:
                import av

                if self.readyState != "live":
                    raise MediaStreamError
                loop = asyncio.get_running_loop()
                if self.t0 is None:
                    self.t0 = loop.time()
                when = self.t0 + (self.k + 1) * 0.02
                d = when - 0.0005 - loop.time()
                if d > 0:
                    await asyncio.sleep(d)
                x = driver.source(loop.time())
                pcm = x if x is not None and len(x) == cls.F else np.zeros(cls.F, dtype=np.int16)
                frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
                frame.sample_rate, frame.pts = cls.RATE, self.k * cls.F
                frame.time_base = fractions.Fraction(1, cls.RATE)
                self.k += 1
                return frame

        return Track()


async def _webrtc(bot: Any, utts: list[Utterance], *, driver_opts: dict) -> tuple[list, dict]:
    import aiohttp
    from aiortc import RTCPeerConnection, RTCSessionDescription

    loop = asyncio.get_running_loop()
    driver = ConversationDriver(utts, sample_rate=_LiveTrack.RATE, frame_ms=20, **driver_opts)
    pc = RTCPeerConnection()
    pc.addTrack(_LiveTrack(driver))
    got_track: asyncio.Future = loop.create_future()

    @pc.on("track")
    def _on_track(track: Any) -> None:
        if track.kind == "audio" and not got_track.done():
            got_track.set_result(track)

    heard = {"frames": 0}

    async def listen(track: Any) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:  # noqa: BLE001 - the track ended
                return
            now = loop.time()
            x = frame.to_ndarray()
            ch = len(frame.layout.channels)
            mono = np.asarray(x, dtype=np.int16).reshape(-1, ch)[:, 0] if ch > 1 else np.asarray(x, dtype=np.int16).ravel()
            if frame.sample_rate != _LiveTrack.RATE:
                from . import audio

                mono = audio.to_int16(audio.resample(audio.to_float(mono), frame.sample_rate, _LiveTrack.RATE))
            heard["frames"] += 1
            driver.on_played(mono, now, None)

    listener = None
    try:
        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)  # aiortc gathers before returning: the offer carries candidates
        async with aiohttp.ClientSession() as http:
            async with http.post(bot.url, json={"sdp": pc.localDescription.sdp, "type": "offer"}) as resp:
                body = await resp.json()
                if resp.status != 200:
                    raise RemoteProtocolError(f"the Pipecat bot refused the offer: HTTP {resp.status} {body}",
                                              status_code=resp.status)  # fmt: skip
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
        try:
            track = await asyncio.wait_for(got_track, 15.0)
        except asyncio.TimeoutError:
            raise PeerTimeoutError("the Pipecat bot sent no audio track within 15 s of its answer") from None
        listener = loop.create_task(listen(track))
        try:
            await asyncio.wait_for(asyncio.shield(driver.done), _budget(driver, utts))
        except asyncio.TimeoutError:
            pass
    finally:
        await pc.close()
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    tl = bot.sessions[-1]
    caller = SimpleNamespace(first_sequence=None, send_times={}, arrivals={}, played_at={})
    agent_stream = SimpleNamespace(send_times={}, arrivals={}, played_at={})
    records = analyse_turns(driver, caller, agent_stream, tl.summary())
    for r in records:
        if "total_ms" in r:
            r["reason"] = ("breakdown not measured over WebRTC to the Pipecat bot (aiortc's RTP sequence numbers "
                           "are not on the loop clock here); total_ms is measured at the caller's ear")  # fmt: skip
    setup = {"codec": "opus", "jitter_buffer": "aiortc", "net": "loopback", "agent_errors": list(tl.errors),
             "frames_heard": heard["frames"]}  # fmt: skip
    return records, setup
