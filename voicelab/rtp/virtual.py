"""Two RTP sessions back to back over channel models, on a virtual clock.

The RTP/RTCP counterpart of the offline simulator: both ends are real
:class:`~voicelab.rtp.session.RtpSession` objects (RTP, RTCP SR/RR, statistics, RTT,
SRTP), the network is one :class:`~voicelab.net.Channel` per direction, and a small
discrete-event loop delivers every datagram at the time the channel model says. Nothing
waits: 60 s of a call takes well under a second. Because the loop knows every packet's
fate, each RTCP report can be put next to the ground truth it estimates (tutorial
chapter 4: "RTP and RTCP on the wire").
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .. import audio, codecs
from ..errors import ParameterError
from ..net import Channel, ChannelConfig
from .packet import RtpPacket
from .rtcp import NTP_UNIX_OFFSET
from .session import RemoteReportReceived, RtpSession
from .srtp import SrtpContext

__all__ = ["run_rtp_call", "RtpCallResult", "rfc3550_jitter_ms"]

_ADDR = {"a": ("192.0.2.1", 4000), "b": ("192.0.2.2", 5000)}
_IP_UDP = 28


@dataclass
class RtpCallResult:
    """What :func:`run_rtp_call` recorded.

    Attributes
    ----------
    packets : pandas.DataFrame
        One row per RTP packet: ``direction`` ("a->b"/"b->a"), ``sequence_number``,
        ``rtp_timestamp``, ``send_time_s``, ``arrival_time_s`` (NaN when lost),
        ``transit_ms``, ``wire_bytes`` (IPv4 + UDP + RTP (+SRTP tag) + payload).
    reports : pandas.DataFrame
        One row per RTCP report block received: ``time_s``, ``receiver`` (who got the
        report), ``about`` (the direction it describes), ``fraction_lost``,
        ``cumulative_lost``, ``jitter_ms``, ``rtt_ms``, and the ground truth for the same
        interval: ``true_fraction_lost``, ``true_cumulative_lost``, ``true_jitter_ms``
        (RFC 3550 A.8 applied to the exact transit times), ``true_rtt_ms``.
    rtcp_bytes : dict
        RTCP bytes on the wire per direction.
    wire : list
        Every datagram as ``(send_time_s, src, dst, bytes)`` (for :meth:`write_pcap`).
    """

    packets: pd.DataFrame
    reports: pd.DataFrame
    rtcp_bytes: dict
    wire: list = None  # type: ignore[assignment]  # (time, src, dst, bytes) of every datagram

    def write_pcap(self, path: Any) -> Any:
        """Write every RTP and RTCP datagram (as sent) to a pcap file."""
        from ..net.pcap import write_pcap

        return write_pcap(path, self.wire or [])

    def bitrate_kbps(self, direction: str = "a->b", *, what: str = "rtp") -> float:
        """Mean bit rate on the wire in kbit/s (``what``: "rtp" or "rtcp")."""
        p = self.packets[self.packets["direction"] == direction]
        dur = p["send_time_s"].max() - p["send_time_s"].min() + 0.02
        if what == "rtcp":
            return self.rtcp_bytes[direction] * 8 / dur / 1000.0
        return float(p["wire_bytes"].sum()) * 8 / dur / 1000.0


def rfc3550_jitter_ms(transit_s: np.ndarray, clock_rate: int) -> np.ndarray:
    """Running RFC 3550 A.8 jitter (ms) over a sequence of transit times (s)."""
    j = 0.0
    out = np.empty(len(transit_s))
    prev = None
    for i, t in enumerate(transit_s):
        if prev is not None:
            d = abs(t - prev) * clock_rate
            j += (d - j) / 16.0
        prev = t
        out[i] = j / clock_rate * 1000.0
    return out


def run_rtp_call(
    *,
    codec: str = "pcmu",
    codec_params: dict | None = None,
    seconds: float = 20.0,
    uplink: ChannelConfig | None = None,
    downlink: ChannelConfig | None = None,
    srtp: bool = False,
    seed: int = 0,
) -> RtpCallResult:
    """Run a two-way RTP call between two :class:`RtpSession` objects.

    Parameters
    ----------
    codec : str
        Codec registry name (payload sizes come from encoding real speech).
    seconds : float
        Call length, 1..600 s.
    uplink, downlink : ChannelConfig
        a -> b and b -> a network paths.
    srtp : bool
        Protect both directions with SRTP (AES_CM_128_HMAC_SHA1_80).
    seed : int
        Seeds the channels, the RTP initial values and the SRTP keys.

    Returns
    -------
    RtpCallResult
    """
    if not 1.0 <= float(seconds) <= 600.0:
        raise ParameterError(f"seconds {seconds:g} is outside 1..600")
    up, down = uplink or ChannelConfig(), downlink or ChannelConfig()
    ss = np.random.SeedSequence(seed).spawn(5)
    c = codecs.get(codec, **(codec_params or {}))
    frame_s = c.frame_ms / 1000.0
    speech = np.asarray(audio.corpus(sample_rate=c.sample_rate)[0].samples)
    pcm = audio.to_int16(np.resize(speech, int(seconds * c.sample_rate) + c.frame_samples))
    payloads = [c.encode(pcm[i * c.frame_samples : (i + 1) * c.frame_samples]) for i in range(int(seconds / frame_s))]
    ctx = {"a": None, "b": None}
    if srtp:
        key_rng = np.random.default_rng(ss[4])
        ka, kb = key_rng.bytes(30), key_rng.bytes(30)
        ctx = {"a": SrtpContext.from_sdes(ka, kb), "b": SrtpContext.from_sdes(kb, ka)}
    pt = c.payload_type if c.payload_type is not None else 96
    sess = {
        who: RtpSession(
            payload_type=pt, clock_rate=c.clock_rate, timestamp_increment=c.timestamp_increment,
            cname=f"{who}@voicelab", epoch_offset=NTP_UNIX_OFFSET + 1.7e9 + (0.0 if who == "a" else 7.0),
            rng=np.random.default_rng(ss[i]), remote_addr=_ADDR["b" if who == "a" else "a"], srtp=ctx[who],
            bitrate=float(c.bitrate),
        )
        for i, who in enumerate("ab")
    }
    chans = {"a->b": Channel(up, seed=np.random.default_rng(ss[2])), "b->a": Channel(down, seed=np.random.default_rng(ss[3]))}
    heap: list = []
    n = 0
    rows: list[dict[str, Any]] = []
    rtcp_bytes = {"a->b": 0, "b->a": 0}
    rep_rows: list[dict[str, Any]] = []
    wire: list[tuple[float, tuple, tuple, bytes]] = []

    def transmit(direction: str, data: bytes, now: float, kind: str) -> None:
        nonlocal n
        arrivals = chans[direction].transmit(now, len(data) + _IP_UDP)
        if kind == "rtp":
            # the RTP header stays in clear under SRTP; strip the auth tag to read it
            pkt = RtpPacket.parse(data[: len(data) - ctx["a"].rtp_overhead] if srtp else data)
            rows.append({
                "direction": direction,
                "sequence_number": pkt.sequence_number,
                "rtp_timestamp": pkt.timestamp,
                "send_time_s": now,
                "arrival_time_s": arrivals[0] if arrivals else math.nan,
                "wire_bytes": len(data) + _IP_UDP,
            })
        else:
            rtcp_bytes[direction] += len(data) + _IP_UDP
        src, dst = ("a", "b") if direction == "a->b" else ("b", "a")
        wire.append((now, _ADDR[src], _ADDR[dst], data))
        for t in arrivals:
            n += 1
            heapq.heappush(heap, (t, n, direction, data, now, kind))

    for s in sess.values():
        s.start(0.0)
    i, now = 0, 0.0
    while True:
        t_frame = i * frame_s if i < len(payloads) else math.inf
        cands = [t_frame, sess["a"].next_timer(), sess["b"].next_timer(), heap[0][0] if heap else math.inf]
        now = min(x for x in cands if x is not None)
        if now > seconds or not math.isfinite(now):
            break
        if now == t_frame:
            for who, d in (("a", "a->b"), ("b", "b->a")):
                transmit(d, sess[who].send_frame(payloads[i], now, marker=(i == 0)), now, "rtp")
            i += 1
        if heap and heap[0][0] <= now:
            t, _, d, data, sent, kind = heapq.heappop(heap)
            dst = "b" if d == "a->b" else "a"
            for ev in sess[dst].receive(data, t, _ADDR["a" if dst == "b" else "b"]):
                if isinstance(ev, RemoteReportReceived):
                    rep_rows.append({"time_s": t, "receiver": dst, "about": "a->b" if dst == "a" else "b->a",
                                     "fraction_lost": ev.fraction, "cumulative_lost": ev.cumulative_lost,
                                     "jitter_ms": ev.jitter_ms, "rtt_ms": None if ev.rtt_s is None else ev.rtt_s * 1000.0})
        for who, d in (("a", "a->b"), ("b", "b->a")):
            nt = sess[who].next_timer()
            if nt is not None and nt <= now:
                for data in sess[who].handle_timer(now):
                    transmit(d, data, now, "rtcp")
                sess[who].pop_events()

    packets = pd.DataFrame(rows)
    packets["transit_ms"] = (packets["arrival_time_s"] - packets["send_time_s"]) * 1000.0
    reports = pd.DataFrame(rep_rows)
    if not reports.empty:
        _ground_truth(packets, reports, up, down, c.clock_rate)
    return RtpCallResult(packets, reports, rtcp_bytes, wire)


def _ground_truth(packets: pd.DataFrame, reports: pd.DataFrame, up: ChannelConfig, down: ChannelConfig, clock_rate: int) -> None:
    """Fill the ``true_*`` columns: what each report should have said."""
    tf, tc, tj, tr = [], [], [], []
    last: dict[str, float] = {}
    for _, r in reports.iterrows():
        about = r["about"]
        p = packets[packets["direction"] == about]
        # packets the reporter could know about: sent before the report was generated
        # (approximated by the report's arrival minus the reverse path's base delay)
        back = down if about == "a->b" else up
        t_gen = r["time_s"] - back.delay_ms / 1000.0
        known = p[p["send_time_s"] <= t_gen].sort_values("send_time_s").iloc[1:]  # RFC 3550 A.1: the
        # first packet only starts probation and is not counted
        arrived = known["arrival_time_s"] <= t_gen
        # what the receiver expects: everything up to the newest packet it has seen
        s_max = known.loc[arrived, "send_time_s"].max() if arrived.any() else -1.0
        expected = known[known["send_time_s"] <= s_max]
        missing = ~(expected["arrival_time_s"] <= t_gen)
        interval = expected["send_time_s"] > last.get(about, -1.0)
        tf.append(float(missing[interval].sum()) / max(int(interval.sum()), 1))
        tc.append(int(missing.sum()))
        rec = known[arrived].sort_values("arrival_time_s")
        tj.append(float(rfc3550_jitter_ms(rec["transit_ms"].to_numpy() / 1000.0, clock_rate)[-1]) if len(rec) > 1 else 0.0)
        tr.append(up.delay_ms + down.delay_ms)
        last[about] = s_max
    reports["true_fraction_lost"] = tf
    reports["true_cumulative_lost"] = tc
    reports["true_jitter_ms"] = tj
    reports["true_rtt_ms"] = tr
