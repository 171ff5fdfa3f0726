"""A SIP call between two sans-IO user agents on a virtual clock.

Both ends are real :class:`~voicelab.sip.ua.UserAgent` objects; the network is one
:class:`~voicelab.net.Channel` per direction; a small discrete-event loop delivers each
datagram when the channel model says and fires each agent's timers when due. A call with
a 32 s transaction timeout finishes in milliseconds, the same seed gives the same call,
and every datagram's fate is recorded for a ladder diagram
(:func:`voicelab.viz.ladder`). Tutorial chapter 3 ("Anatomy of a SIP call") is built on it.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import ParameterError
from ..net import Channel, ChannelConfig
from .ua import CallEstablished, IncomingCall, UserAgent

__all__ = ["run_sip_call", "SipCallResult", "VirtualSipNetwork"]

CALLER_ADDR = ("192.0.2.10", 5060)
AGENT_ADDR = ("198.51.100.20", 5060)


@dataclass
class SipCallResult:
    """What :func:`run_sip_call` recorded.

    Attributes
    ----------
    datagrams : list of dict
        Every datagram: ``send_time_s``, ``arrival_time_s`` (NaN when lost), ``src``,
        ``dst`` ("caller"/"agent"), ``label`` (first line), ``retransmission``, ``bytes``.
    caller, agent : UserAgent
        The two agents after the call (their ``calls``, ``trace``...).
    call : voicelab.sip.ua.Call
        The caller's call object (``times.setup_ms``, ``media``, ``local_sdp``...).
    events : list of (time, who, event)
    """

    datagrams: list
    caller: UserAgent
    agent: UserAgent
    call: Any
    events: list = field(default_factory=list)

    @property
    def established(self) -> bool:
        return any(isinstance(e, CallEstablished) for _, who, e in self.events if who == "caller")

    def write_pcap(self, path: Any) -> Any:
        """Write every datagram (as sent, lost ones included) to a pcap file."""
        from ..net.pcap import write_pcap

        return write_pcap(path, ((d["send_time_s"], d["src_addr"], d["dst_addr"], d["data"]) for d in self.datagrams))

    def summary(self) -> dict[str, Any]:
        """Setup time, post-dial delay, datagram and retransmission counts."""
        t = self.call.times
        return {
            "established": self.established,
            "setup_ms": t.setup_ms,
            "post_dial_delay_ms": t.post_dial_delay_ms,
            "datagrams": len(self.datagrams),
            "lost": sum(1 for d in self.datagrams if math.isnan(d["arrival_time_s"])),
            "retransmissions": sum(1 for d in self.datagrams if d["retransmission"]),
            "final_status": getattr(self.call, "status", None),
        }


class VirtualSipNetwork:
    """Deliver datagrams between named agents through per-direction channel models."""

    def __init__(self, nodes: dict[str, Any], channels: dict[tuple[str, str], Channel], on_event: Callable | None = None) -> None:
        self.nodes = nodes
        self.addr_to_name = {n.local_addr: name for name, n in nodes.items()}
        self.channels = channels
        self.on_event = on_event
        self.queue: list = []
        self.seq = itertools.count()
        self.now = 0.0
        self.datagrams: list[dict[str, Any]] = []
        self.events: list = []
        self._seen: set[tuple[str, bytes]] = set()
        self._actions: list = []  # (time, seq, fn): the applications' own steps

    def at(self, t: float, fn: Callable[[float], None]) -> None:
        """Run ``fn(now)`` at virtual time ``t`` (an application step: answer, hang up)."""
        heapq.heappush(self._actions, (float(t), next(self.seq), fn))

    def idle(self) -> bool:
        """Nothing in flight, no timer armed, no application step pending."""
        return not self.queue and not self._actions and all(n.next_timer() is None for n in self.nodes.values())

    def _pump(self) -> None:
        for name, node in self.nodes.items():
            for data, dst in node.datagrams_to_send():
                dst_name = self.addr_to_name.get((dst[0], dst[1]))
                if dst_name is None:  # addressed to nobody on this network
                    continue
                arrivals = self.channels[(name, dst_name)].transmit(self.now, len(data) + 28)
                first_line = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
                key = (name, data)
                self.datagrams.append({
                    "send_time_s": self.now, "arrival_time_s": arrivals[0] if arrivals else math.nan,
                    "src": name, "dst": dst_name, "label": first_line, "retransmission": key in self._seen,
                    "bytes": len(data), "data": data, "src_addr": node.local_addr, "dst_addr": (dst[0], dst[1]),
                })
                self._seen.add(key)
                for t in arrivals:
                    heapq.heappush(self.queue, (t, next(self.seq), dst_name, data, node.local_addr))

    def _drain(self) -> None:
        for name, node in self.nodes.items():
            while (ev := node.next_event()) is not None:
                self.events.append((self.now, name, ev))
                if self.on_event is not None:
                    self.on_event(name, node, ev, self.now)

    def run(self, until: float) -> None:
        """Advance the virtual clock to ``until`` (seconds), or until nothing is left to do."""
        for _ in range(1_000_000):
            self._drain()
            self._pump()
            cands = [self.queue[0][0]] if self.queue else []
            cands += [self._actions[0][0]] if self._actions else []
            cands += [t for t in (n.next_timer() for n in self.nodes.values()) if t is not None]
            if not cands or min(cands) > until:
                self.now = max(self.now, until)
                return
            self.now = max(self.now, min(cands))
            while self.queue and self.queue[0][0] <= self.now:
                _, _, dst, data, src = heapq.heappop(self.queue)
                self.nodes[dst].receive(data, src, self.now)
            while self._actions and self._actions[0][0] <= self.now:
                _, _, fn = heapq.heappop(self._actions)
                fn(self.now)
            for n in self.nodes.values():
                t = n.next_timer()
                if t is not None and t <= self.now:
                    n.handle_timer(self.now)
        raise ParameterError("the virtual SIP network did not settle (a timer loop?)")


def run_sip_call(
    *,
    caller_codecs: list[str] | None = None,
    agent_codecs: list[str] | None = None,
    uplink: ChannelConfig | None = None,
    downlink: ChannelConfig | None = None,
    ring_s: float = 0.0,
    talk_s: float = 2.0,
    agent_credentials: dict[str, str] | None = None,
    caller_credentials: tuple[str, str] | None = None,
    transport: str = "udp",
    seed: int = 0,
) -> SipCallResult:
    """Place one call from a caller UA to an agent UA and hang up.

    Parameters
    ----------
    caller_codecs, agent_codecs : list of str
        Codecs each side offers/accepts (default PCMU and Opus / PCMU only).
    uplink, downlink : ChannelConfig
        Caller -> agent and agent -> caller paths for SIP.
    ring_s : float
        Time between the agent's 180 Ringing and its 200 OK.
    talk_s : float
        Time from the call being established to the caller's BYE.
    agent_credentials : dict, optional
        ``{user: password}``: the agent challenges requests with digest (realm "voicelab").
    caller_credentials : (user, password), optional
        What the caller answers a challenge with.
    transport : {"udp", "tcp"}
        ``tcp`` marks the transport reliable (no retransmissions).
    seed : int
        Seeds both channels and both agents (tags, branches, SDP ids).

    Returns
    -------
    SipCallResult
    """
    ss = np.random.SeedSequence(seed).spawn(4)
    authenticate = None
    if agent_credentials is not None:
        from .auth import DigestAuthenticator

        authn = DigestAuthenticator("voicelab", dict(agent_credentials), secret=np.random.default_rng(ss[3]).bytes(32))

        def _authenticate(request, now):
            result = authn.verify(request, now)
            return None if result.ok else authn.reject(request, result, now)

        authenticate = _authenticate

    caller = UserAgent(
        local_uri=f"sip:caller@{CALLER_ADDR[0]}", local_addr=CALLER_ADDR, rng=np.random.default_rng(ss[0]),
        media_address=CALLER_ADDR[0], codecs=caller_codecs or ["pcmu", "opus"], transport=transport,
        credentials_for=(lambda realm: caller_credentials) if caller_credentials else None,
    )
    agent = UserAgent(
        local_uri=f"sip:agent@{AGENT_ADDR[0]}", local_addr=AGENT_ADDR, rng=np.random.default_rng(ss[1]),
        media_address=AGENT_ADDR[0], codecs=agent_codecs or ["pcmu"], transport=transport, authenticate=authenticate,
    )
    chan_rng = np.random.default_rng(ss[2])
    channels = {
        ("caller", "agent"): Channel(uplink or ChannelConfig(delay_ms=20.0), seed=chan_rng),
        ("agent", "caller"): Channel(downlink or ChannelConfig(delay_ms=20.0), seed=np.random.default_rng(ss[2].spawn(1)[0])),
    }
    def on_event(name, ua, ev, now):
        if name == "agent" and isinstance(ev, IncomingCall):
            if ring_s > 0:
                ua.answer(ev.call, 180, now=now)
                net.at(now + ring_s, lambda t, c=ev.call: ua.answer(c, 200, now=t))
            else:
                ua.answer(ev.call, 200, now=now)
        if name == "caller" and isinstance(ev, CallEstablished):
            net.at(now + talk_s, lambda t: caller.bye(call, now=t))

    net = VirtualSipNetwork({"caller": caller, "agent": agent}, channels, on_event)
    call = caller.invite(f"sip:agent@{AGENT_ADDR[0]}", now=0.0)
    # Run until both agents are idle (a call that never ends is cut at 300 s).
    while not net.idle() and net.now < 300.0:
        net.run(net.now + 10.0)
    return SipCallResult(net.datagrams, caller, agent, call, net.events)
