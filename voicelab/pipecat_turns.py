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

``sip``
    the phone way: the lab's SIP caller (its UA and a
    :class:`~voicelab.rtp.live.LiveAudioStream`, PCMU) calls a
    :class:`voicelab.wsbridge.MediaStreamBridge` (a media-streams platform: SIP UAS +
    Twilio-protocol WebSocket client), which streams the call to the bot's WebSocket.
    Every frame's crossing is stamped on the loop clock at the caller, the bridge and the
    bot, so the breakdown is computed as over ``ws`` and its network parts are split per
    hop: ``sip_up_ms`` (caller -> bridge RTP), ``bridge_up_ms`` (the bridge's jitter
    buffer), ``ws_up_ms`` (bridge -> bot), and back ``ws_down_ms``, ``bridge_down_ms``
    (the bridge's buffer for the bot's faster-than-real-time stream), ``sip_down_ms``.

Impairment (``net``, a :class:`~voicelab.net.ChannelConfig`): over ``ws`` the lab's TCP
relay (:class:`~voicelab.net.tcprelay.TcpRelay`: loss becomes delay) sits between the
caller and the bot; over ``sip`` the UDP relay (:class:`~voicelab.net.relay.UdpRelay`)
anchors the SIP leg's media (the carrier path; the bridge-to-bot WebSocket stays
clean); over ``webrtc`` the UDP relay carries ICE, DTLS and RTP between the two aiortc
peers (their host candidates rewritten to cross it, as :mod:`voicelab.webrtc.call` does).

Barge-in (``barge_in_after_s``): the caller talks over each reply; the bot's Pipecat
interruption (Silero VAD start -> ``InterruptionFrame`` -> Twilio ``clear``) stops it,
and ``barge_in_stop_ms`` is the lab's figure (:func:`voicelab.turns.analyse_turns`): the
caller's speech onset -> the last audible sample of the interrupted reply at the ear.

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

__all__ = ["pipecat_call", "parse_bot_target", "CALL_TRANSPORTS", "HOPS", "TARGET_SCHEMES"]

#: How the caller reaches the bot.
CALL_TRANSPORTS = ("ws", "webrtc", "sip")
#: The per-hop split of the network parts over ``sip`` (``turn.<hop>_ms.*``).
HOPS = ("sip_up", "bridge_up", "ws_up", "ws_down", "bridge_down", "sip_down")
#: URL schemes of a bot running elsewhere (``target``) -> the caller's transport.
TARGET_SCHEMES = {"pipecat+ws": "ws", "pipecat+webrtc": "webrtc"}
#: What an external bot's records say instead of the stage breakdown and Pipecat's figure.
NOT_REPORTED = "not reported (an external bot: only the lab's own bot hands over its stage times and Pipecat's figure)"


def parse_bot_target(target: str) -> tuple[str, str, int, str]:
    """Parse a bot URL: ``pipecat+ws://HOST:PORT/PATH`` or ``pipecat+webrtc://HOST:PORT/PATH``.

    ``pipecat+ws`` is a WebSocket endpoint speaking the Twilio media-streams protocol
    (Pipecat's ``TwilioFrameSerializer``; any bot that does); ``pipecat+webrtc`` is a
    SmallWebRTC HTTP offer endpoint (``POST`` JSON ``{"sdp", "type": "offer"}``, answered
    with the same shape), reached over plain HTTP.

    Returns
    -------
    (transport, host, port, path)
        ``transport`` is ``"ws"`` or ``"webrtc"``; ``path`` defaults to ``/`` (ws) or
        ``/api/offer`` (webrtc, SmallWebRTC's example route).

    Raises
    ------
    ParameterError
        Another scheme, no host or no port.
    """
    from urllib.parse import urlsplit

    if not isinstance(target, str) or "://" not in target:
        raise ParameterError(f"a bot URL is pipecat+ws://HOST:PORT/PATH or pipecat+webrtc://HOST:PORT/PATH, got {target!r}")
    scheme = target.split("://", 1)[0].lower()
    if scheme not in TARGET_SCHEMES:
        raise ParameterError(f"bot URL scheme {scheme!r} is not known: use pipecat+ws:// (Twilio media streams) or "
                             "pipecat+webrtc:// (SmallWebRTC offer endpoint over HTTP)")  # fmt: skip
    try:
        u = urlsplit(target)
        host, port = u.hostname, u.port
    except ValueError as exc:
        raise ParameterError(f"bad bot URL {target!r}: {exc}") from None
    if not host or port is None or port == 0:
        raise ParameterError(f"the bot URL must name a host and a port (e.g. pipecat+ws://127.0.0.1:8765/ws), got {target!r}")
    transport = TARGET_SCHEMES[scheme]
    path = u.path or ("/" if transport == "ws" else "/api/offer")
    if u.query:
        path += "?" + u.query
    return transport, host, int(port), path


class _ExternalBot:
    """A bot running elsewhere, called by URL: no timelines, no Pipecat figures (we cannot see inside it)."""

    def __init__(self, target: str) -> None:
        from .net.iface import is_loopback_address

        self.target = target
        self.transport, host, port, self.path = parse_bot_target(target)
        if host == "localhost":
            host = "127.0.0.1"
        if not is_loopback_address(host):
            raise ParameterError(f"the lab calls bots on loopback only (127.0.0.0/8, ::1 or localhost), got host {host!r}: "
                                 "run the bot on this machine, or forward its port here")  # fmt: skip
        self.address = (host, port)
        hp = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.url = f"ws://{hp}{self.path}" if self.transport == "ws" else f"http://{hp}{self.path}"

    async def collect(self) -> list[Any]:
        from .pipecat_bot import _Timeline

        return [_Timeline()]

    def summary(self) -> dict[str, Any]:
        return {"turns": [], "responder": {}, "pipecat_latency_ms": []}

    def describe(self) -> dict[str, Any]:
        return {"framework": "external", "url": self.target, "transport": self.transport, "process": "external",
                "llm": "unknown (an external bot)"}  # fmt: skip

    async def __aenter__(self) -> "_ExternalBot":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None


def _unreachable(url: str, exc: BaseException) -> RemoteProtocolError:
    """One line for a connection that could not be made (refused, no route, unknown host)."""
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorError):
        exc = exc.os_error
    if isinstance(exc, ConnectionRefusedError):
        what = "connection refused (nothing listens there)"
    else:
        what = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return RemoteProtocolError(f"cannot reach the bot at {url}: {what}", status_code=503)


def _net_dict(net: Any) -> dict[str, Any]:
    import dataclasses

    return {k: v for k, v in dataclasses.asdict(net).items() if not isinstance(v, (list, dict)) or v}


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
    barge_in_after_s: float | None = None,
    net: Any = None,
    bridge_jitter_buffer: str = "fixed:40",
    interruptions: bool = True,
    start_ms: float = 200.0,
    in_process: bool = False,
    target: str | None = None,
    connect_timeout_s: float = 10.0,
) -> dict[str, Any]:
    """A conversation of ``turns`` utterances with a Pipecat bot (the lab's, or one at ``target``).

    Parameters
    ----------
    transport : {"ws", "webrtc", "sip"}
        ``sip``: the lab's SIP caller -> :class:`voicelab.wsbridge.MediaStreamBridge` ->
        the bot's WebSocket (Twilio serializer).
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
    barge_in_after_s : float, optional
        The caller talks over each reply this long after hearing it start.
    net : ChannelConfig, optional
        Impairment of the caller's path (see the module docstring).
    bridge_jitter_buffer : str
        ``sip``: the bridge's buffer on both legs.
    interruptions : bool
        The bot's barge-in (:class:`voicelab.pipecat_bot.PipecatBot`).
    start_ms : float
        The bot's Silero VAD ``start_secs``, ms.
    in_process : bool
        Run the bot in this process (:class:`~voicelab.pipecat_bot.PipecatBot`) instead
        of its own (:class:`~voicelab.pipecat_bot.BotProcess`, the default): its
        PocketSphinx then stalls the caller's clocks (it holds the GIL while decoding).
    target : str, optional
        Call a bot already running elsewhere instead of starting the lab's:
        ``pipecat+ws://HOST:PORT/PATH`` (Twilio media streams over a WebSocket) or
        ``pipecat+webrtc://HOST:PORT/PATH`` (a SmallWebRTC HTTP offer endpoint), see
        :func:`parse_bot_target`. ``transport`` must then be the URL's (or left at
        ``"ws"``, the default, for either). The turns are measured at the caller's ear
        exactly as with the lab's bot; the bot's stage breakdown, what it recognised
        and Pipecat's own figure are not reported (``pipecat_figure`` says so): the
        bot's own parameters (``stop_ms``, ``start_ms``, ``llm_*``, ``replies``,
        ``interruptions``) do not apply.
    connect_timeout_s : float
        Time allowed to open the WebSocket or to get the SDP answer (s); then
        :class:`~voicelab.errors.PeerTimeoutError`.

    Returns
    -------
    dict
        ``turn.*`` statistics as :func:`voicelab.turns.pipeline_call`, plus
        ``turn.pipecat_ms.*`` and ``turn.pipecat_diff_ms.*``; ``turns`` (records),
        ``agent`` (the bot's per-turn stage times) and ``bot`` (its set-up).

    Raises
    ------
    RemoteProtocolError
        The bot cannot be reached (refused, unknown host: status 503) or is not a bot
        (an HTTP error such as 404 to the upgrade or the offer, a reply that is not an
        SDP answer).
    PeerTimeoutError
        No connection or answer within ``connect_timeout_s``; no audio track.
    """
    from .net import ChannelConfig
    from .pipecat_bot import BotProcess, PipecatBot

    if transport not in CALL_TRANSPORTS:
        raise ParameterError(f"the Pipecat bot is called over 'ws', 'webrtc' or 'sip', got {transport!r}")
    if isinstance(connect_timeout_s, bool) or not isinstance(connect_timeout_s, (int, float)) or not 0 < connect_timeout_s <= 120:
        raise ParameterError(f"connect_timeout_s must be a number in (0, 120] s, got {connect_timeout_s!r}")
    external = _ExternalBot(target) if target is not None else None
    if external is not None:
        if transport not in ("ws", external.transport):
            raise ParameterError(f"the bot URL {target!r} is reached over {external.transport!r}, not {transport!r}")
        transport = external.transport
    if net is not None and not isinstance(net, ChannelConfig):
        raise ParameterError(f"net must be a voicelab.net.ChannelConfig or None, got {type(net).__name__}")
    if net == ChannelConfig():
        net = None
    utts = list(utterances) if utterances is not None else load_utterances(turns)
    driver_opts = dict(reply_timeout_s=reply_timeout_s, reply_end_silence_s=reply_end_silence_s, gap_s=gap_s,
                       barge_in_after_s=barge_in_after_s)  # fmt: skip
    kind = PipecatBot if in_process else BotProcess
    bot_cm: Any = external if external is not None else kind(
        "webrtc" if transport == "webrtc" else "ws", stop_ms=stop_ms, start_ms=start_ms, llm_ttft_s=llm_ttft_s,
        llm_sigma=llm_sigma, replies=replies, seed=seed, interruptions=interruptions)  # fmt: skip
    async with bot_cm as bot:
        if transport == "ws":
            records, setup = await _ws(bot, utts, jitter_buffer=jitter_buffer, seed=seed, driver_opts=driver_opts, net=net,
                                       connect_timeout_s=connect_timeout_s)  # fmt: skip
        elif transport == "sip":
            records, setup = await _sip(bot, utts, jitter_buffer=jitter_buffer, bridge_jitter_buffer=bridge_jitter_buffer,
                                        seed=seed, driver_opts=driver_opts, net=net)  # fmt: skip
        else:
            records, setup = await _webrtc(bot, utts, driver_opts=driver_opts, net=net, seed=seed,
                                           connect_timeout_s=connect_timeout_s)  # fmt: skip
        summary = bot.summary()
        desc = bot.describe()
    if external is not None:
        return _external_result(records, setup, desc, utts, turns=turns, net=net, barge_in_after_s=barge_in_after_s)
    _attach_pipecat(records, summary)
    out: dict[str, Any] = {"agent_kind": "pipecat", "transport": transport, **setup, "stop_ms": float(stop_ms),
                           "llm": desc["llm"], "bot": desc, "turns_requested": turns,
                           "net_config": None if net is None else _net_dict(net),
                           "barge_in_after_s": barge_in_after_s, "bot_interruptions": len(summary.get("interruptions", [])),
                           "bot_clears": len(summary.get("clears", []))}  # fmt: skip
    out.update(summarise_turns(records))
    for key in ("pipecat", "pipecat_diff") + HOPS:
        vals = [r[f"{key}_ms"] for r in records if r.get(f"{key}_ms") is not None]
        if not vals and key in HOPS:
            continue
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


def _external_result(records: list[dict], setup: dict, desc: dict, utts: list[Utterance], *, turns: int, net: Any,
                     barge_in_after_s: float | None) -> dict[str, Any]:  # fmt: skip
    """The result of a call to a bot by URL: the caller's measurements only, the rest said to be unreported."""
    for r in records:
        # nothing of the bot's inside is known: not what it recognised, not its stages
        r.update(recognised=None, wer=None, word_errors=0, words=0, agent_turns=None, pipecat_ms=None)
        if "total_ms" in r:
            r["reason"] = ("total_ms measured at the caller's ear; the stage breakdown is " + NOT_REPORTED)
    out: dict[str, Any] = {"agent_kind": "external", "transport": setup.pop("transport", None) or desc["transport"],
                           "target": desc["url"], **setup, "llm": desc["llm"], "bot": desc, "turns_requested": turns,
                           "net_config": None if net is None else _net_dict(net), "barge_in_after_s": barge_in_after_s,
                           "pipecat_figure": NOT_REPORTED, "bot_interruptions": None, "bot_clears": None}  # fmt: skip
    out.pop("agent_errors", None)
    out.update(summarise_turns(records))
    for key in ("pipecat", "pipecat_diff"):
        for k in ("p50", "p90", "max"):
            out[f"turn.{key}_ms.{k}"] = None
    out["turn.reconciled"] = None
    out["turn.llm_modelled"] = None  # whatever the bot's LLM is, we cannot tell
    out["pipecat_metrics_ms.p50"] = None
    out["turns"] = records
    out["agent"] = []
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


async def _ws(bot: Any, utts: list[Utterance], *, jitter_buffer: str, seed: int, driver_opts: dict,
              net: Any = None, connect_timeout_s: float = 10.0) -> tuple[list, dict]:  # fmt: skip
    from .net.iface import LoopbackInterface
    from .net.tcprelay import TcpRelay
    from .wsmedia.live import MediaStreamClient

    ifc = LoopbackInterface(asyncio.get_running_loop())
    relay = None
    if net is not None:  # the caller's path to the bot: TCP through the impairment model each way
        relay = await TcpRelay(ifc, bot.address, uplink=net, downlink=net, seed=seed).start()
    client = MediaStreamClient(ifc, relay.front_address if relay else bot.address, jitter_buffer=jitter_buffer, seed=seed,
                               path=getattr(bot, "path", "/media"))  # fmt: skip
    try:
        try:
            await asyncio.wait_for(client.connect(), connect_timeout_s)
        except asyncio.TimeoutError:
            raise PeerTimeoutError(f"the bot at {bot.url} did not open its WebSocket within {connect_timeout_s:g} s") from None
        except OSError as exc:
            raise _unreachable(bot.url, exc) from None
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
        tl = (await bot.collect())[-1]
        agent_stream = SimpleNamespace(send_times=tl.send_times, arrivals=tl.arrivals, played_at=tl.played_at)
        records = analyse_turns(driver, media, agent_stream, tl.summary())
        if client.error is not None:
            raise RemoteProtocolError(f"the Pipecat bot broke the media-streams protocol: {client.error}")
        setup = {"codec": "pcmu", "jitter_buffer": jitter_buffer, "net": "loopback+tcprelay" if relay else "loopback",
                 "agent_errors": list(tl.errors), "caller_clears": len(media.cleared)}  # type: ignore[union-attr]
        if relay is not None:
            setup["tcp_retransmissions"] = {"up": relay.up.retransmissions, "down": relay.down.retransmissions}
        return records, setup
    finally:
        await client.stop()
        if relay is not None:
            await relay.close()


async def _sip(bot: Any, utts: list[Utterance], *, jitter_buffer: str, bridge_jitter_buffer: str, seed: int,
               driver_opts: dict, net: Any = None) -> tuple[list, dict]:  # fmt: skip
    """The lab's SIP caller -> the media-stream bridge -> the bot's WebSocket; per-hop breakdown."""
    from .calls import open_caller
    from .net.iface import LoopbackInterface
    from .net.relay import UdpRelay
    from .rtp.live import LiveAudioStream
    from .sip.ua import CallEnded, CallEstablished, CallFailed
    from .wsbridge import MediaStreamBridge

    loop = asyncio.get_running_loop()
    ifc = LoopbackInterface(loop)
    bridge = MediaStreamBridge(bot.url, codecs=["pcmu"], jitter_buffer=bridge_jitter_buffer,
                               ws_jitter_buffer=bridge_jitter_buffer, iface=ifc, seed=seed + 1)  # fmt: skip
    await bridge.start()
    ua, sip = await open_caller(ifc, codec="pcmu", rtcp_mux=True, seed=seed)
    stream: Any = None
    relay: Any = None
    try:
        media_port = ifc.free_port("udp")
        if net is not None:  # the carrier path: the relay anchors the SIP leg's media
            relay = await UdpRelay(ifc, ("127.0.0.1", 9), uplink=net, downlink=net, seed=seed,
                                   client=("127.0.0.1", media_port)).start()  # fmt: skip
        call = ua.invite(bridge.uri, now=loop.time(), media_port=relay.back_address[1] if relay else media_port)
        sip.flush()
        ev = await sip.wait_for(CallEstablished, CallFailed)
        if isinstance(ev, CallFailed):
            raise RemoteProtocolError(f"the bridge refused the call: {ev.status}", status_code=int(ev.status or 500))
        stream = LiveAudioStream.for_media(ifc, call.media, local_addr=("127.0.0.1", media_port),
                                           jitter_buffer=jitter_buffer, seed=seed + 2, cname="caller@voicelab",
                                           track=True, source_filter=False)  # fmt: skip
        await stream.open()
        if relay is not None:
            relay.target = (call.media.remote_address, call.media.remote_port)
            stream.set_remote(relay.front_address)
        await asyncio.wait_for(bridge.answered(1), 10.0)
        for _ in range(400):  # the bridge opens its WebSocket once it has answered
            bc = bridge.calls.get(call.call_id)
            if bc is not None and (bc.setup_ms is not None or bc.errors):
                break
            await asyncio.sleep(0.005)
        bc = bridge.calls.get(call.call_id)
        if bc is None or bc.setup_ms is None:
            raise PeerTimeoutError(f"the bridge did not reach the bot's WebSocket: {bc.errors if bc else 'no call'}")
        driver = ConversationDriver(utts, sample_rate=8000, frame_ms=20, **driver_opts)
        stream.on_played = lambda when, frame: driver.on_played(frame, when, stream.last_played_seq)
        stream.send_live("source", source=driver.source)
        try:
            await asyncio.wait_for(asyncio.shield(driver.done), _budget(driver, utts))
        except asyncio.TimeoutError:
            pass
        ua.bye(call, now=loop.time())
        sip.flush()
        await sip.wait_for(CallEnded, timeout=10.0)
        await asyncio.wait_for(bridge.ended(1), 10.0)
        tl = (await bot.collect())[-1]
        bm = bc.client.media
        bs = bc.stream
        # the bot's stamps, in the caller's RTP sequence numbers (analyse_turns' agent stream)
        up_chunk = {q: c for c, q in bc.up_chunk_to_seq.items() if q is not None}
        agent_arrivals = {q: tl.arrivals[c] for q, c in up_chunk.items() if c in tl.arrivals}
        agent_send = {r: tl.send_times[c] for r, c in bc.down_seq_to_chunk.items() if c is not None and c in tl.send_times}
        agent_stream = SimpleNamespace(send_times=agent_send, arrivals=agent_arrivals, played_at=dict(agent_arrivals))
        records = analyse_turns(driver, stream, agent_stream, tl.summary())
        _split_hops(records, driver, stream, bs, bm, tl, up_chunk, bc.down_seq_to_chunk)
        setup = {"codec": call.media.codec, "jitter_buffer": jitter_buffer, "bridge_jitter_buffer": bridge_jitter_buffer,
                 "net": "loopback+udprelay(sip leg)" if relay else "loopback", "agent_errors": list(tl.errors),
                 "bridge": bc.summary(), "bridge_errors": list(bridge.errors)}  # fmt: skip
        return records, setup
    finally:
        if stream is not None:
            await stream.close()
        if relay is not None:
            await relay.close()
        await sip.close()
        await bridge.close()


def _split_hops(records: list[dict], driver: ConversationDriver, caller: Any, bs: Any, bm: Any, tl: Any,
                up_chunk: dict, down_chunk: dict) -> None:  # fmt: skip
    """Split ``network_up_ms``/``network_down_ms`` of each SIP-bridge turn into its hops (they telescope)."""
    from .turns import _at_or_after, _seq

    for r in records:
        if "residual_ms" not in r:
            continue
        t = driver.turns[r["turn"]]
        try:
            seq_k = _seq(caller.first_sequence, t.last_frame)
            s_up = caller.send_times[seq_k]
            _, q = _at_or_after({k: v for k, v in ((k, tl.arrivals.get(c)) for k, c in up_chunk.items()) if v is not None},
                                seq_k)  # the caller frame whose chain reached the bot (as analyse_turns followed it)
            c_up = up_chunk[q]
            arr_b = bs.arrivals[q]
            sent_b = bm.send_times[c_up]
            arr_bot = tl.arrivals[c_up]
            seq_r = t.reply_seq
            c_dn = down_chunk[seq_r]
            sent_bot = tl.send_times[c_dn]
            arr_bw = bm.arrivals[c_dn]
            sent_br = bs.send_times[seq_r]
            arr_c = caller.arrivals[seq_r]
        except (KeyError, TypeError):
            r["hops_note"] = "per-hop split unavailable (a frame of the chain is missing at the bridge)"
            continue
        r.update(sip_up_ms=(arr_b - s_up) * 1000.0, bridge_up_ms=(sent_b - arr_b) * 1000.0,
                 ws_up_ms=(arr_bot - sent_b) * 1000.0, ws_down_ms=(arr_bw - sent_bot) * 1000.0,
                 bridge_down_ms=(sent_br - arr_bw) * 1000.0, sip_down_ms=(arr_c - sent_br) * 1000.0)  # fmt: skip


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


def _one_candidate(sdp: str, new: tuple[str, int] | None = None) -> tuple[str, tuple[str, int]]:
    """Keep the first IPv4 UDP host candidate of an SDP (rewritten to ``new`` if given); returns (sdp, its address)."""
    lines, found = [], None
    for line in sdp.split("\r\n"):
        if line.startswith("a=candidate:"):
            f = line.split()
            if found is not None or len(f) < 8 or f[2].lower() != "udp" or f[7] != "host" or ":" in f[4]:
                continue
            found = (f[4], int(f[5]))
            if new is not None:
                f[4], f[5] = new[0], str(new[1])
                line = " ".join(f)
        lines.append(line)
    if found is None:
        raise RemoteProtocolError("no IPv4 UDP host candidate in the SDP to route through the impairment relay")
    return "\r\n".join(lines), found


async def _post_offer(url: str, sdp: str, timeout_s: float) -> dict[str, Any]:
    """POST the offer to a SmallWebRTC endpoint; its answer ``{"sdp", "type": "answer"}`` or a typed error."""
    import json

    import aiohttp

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http:
            async with http.post(url, json={"sdp": sdp, "type": "offer"}) as resp:
                text = await resp.text(errors="replace")
                status = resp.status
    except asyncio.TimeoutError:
        raise PeerTimeoutError(f"the bot at {url} gave no SDP answer within {timeout_s:g} s") from None
    except aiohttp.ClientConnectorError as exc:
        raise _unreachable(url, exc) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise RemoteProtocolError(f"the bot at {url} broke the HTTP exchange: {type(exc).__name__} {exc}"[:300],
                                  status_code=502) from None  # fmt: skip
    short = " ".join(text.split())[:120]
    if status != 200:
        raise RemoteProtocolError(f"the bot at {url} refused the offer: HTTP {status} {short}", status_code=status)
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("sdp"), str) or body.get("type") != "answer":
        raise RemoteProtocolError(f"the endpoint at {url} is not a SmallWebRTC bot: its reply is not an SDP answer "
                                  f"({short!r})", status_code=502)  # fmt: skip
    return body


def _stop_heard(frames: list[tuple[float, np.ndarray]], rate: int, t_from: float, t_to: float) -> float:
    """End of the last audible sample heard in ``[t_from, t_to)`` (``t_from`` when none), frames placed by time."""
    from .turns import EAR_LEVEL

    stop = t_from
    for when, x in frames:
        n = len(x)
        if when >= t_to or when + n / rate <= t_from:
            continue
        loud = np.flatnonzero(np.abs(x.astype(np.float64) / 32768.0) >= EAR_LEVEL)
        if not len(loud):
            continue
        ends = when + (loud + 1) / rate
        ends = ends[(ends > t_from) & (ends <= t_to)]
        if len(ends):
            stop = max(stop, float(ends[-1]))
    return stop


async def _webrtc(bot: Any, utts: list[Utterance], *, driver_opts: dict, net: Any = None,
                  seed: int = 0, connect_timeout_s: float = 10.0) -> tuple[list, dict]:  # fmt: skip
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

    heard: dict[str, Any] = {"frames": 0, "log": []}

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
            heard["log"].append((now, mono))
            driver.on_played(mono, now, None)

    listener = None
    relay = None
    try:
        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)  # aiortc gathers before returning: the offer carries candidates
        offer_sdp = pc.localDescription.sdp
        if net is not None:
            from .net.relay import UdpRelay

            # both aiortc peers gather on the host's own address (aioice skips 127.0.0.1):
            # the relay binds there, on real sockets (the event loop as its interface)
            _, c_addr = _one_candidate(offer_sdp)
            relay = await UdpRelay(loop, ("127.0.0.1", 9), uplink=net, downlink=net, seed=seed, client=c_addr,
                                   listen=(c_addr[0], 0)).start()  # fmt: skip
            offer_sdp, _ = _one_candidate(offer_sdp, relay.back_address)
        body = await _post_offer(bot.url, offer_sdp, connect_timeout_s)
        answer_sdp = body["sdp"]
        if relay is not None:
            _, b_addr = _one_candidate(answer_sdp)
            relay.target = b_addr
            answer_sdp, _ = _one_candidate(answer_sdp, relay.front_address)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type=body["type"]))
        except (ValueError, TypeError, AttributeError, IndexError) as exc:
            raise RemoteProtocolError(f"the bot at {bot.url} answered with an unusable SDP: {type(exc).__name__} {exc}"[:300],
                                      status_code=502) from None  # fmt: skip
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
        if relay is not None:
            await relay.close()
    tl = (await bot.collect())[-1]
    caller = SimpleNamespace(first_sequence=None, send_times={}, arrivals={}, played_at={})
    agent_stream = SimpleNamespace(send_times={}, arrivals={}, played_at={})
    records = analyse_turns(driver, caller, agent_stream, tl.summary())
    for i, r in enumerate(records):
        if "total_ms" in r:
            r["reason"] = ("breakdown not measured over WebRTC to the Pipecat bot (aiortc's RTP sequence numbers "
                           "are not on the loop clock here); total_ms is measured at the caller's ear")  # fmt: skip
            if i + 1 < len(driver.turns) and driver.turns[i + 1].barge_in:  # the lab's barge-in figure, same window
                bt = driver.turns[i + 1]
                stop = _stop_heard(heard["log"], _LiveTrack.RATE, bt.speech_from, bt.speech_end)
                r["barge_in_stop_ms"] = (stop - bt.speech_from) * 1000.0
    setup = {"codec": "opus", "jitter_buffer": "aiortc", "net": "loopback+udprelay" if relay else "loopback",
             "agent_errors": list(tl.errors), "frames_heard": heard["frames"]}  # fmt: skip
    return records, setup
