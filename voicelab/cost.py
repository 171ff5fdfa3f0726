"""What a path costs: bytes on the wire per codec and transport, and money per 1,000 minutes.

Two kinds of bill dominate a voice agent's transport cost: a carrier's per-minute rate for
phone calls (PSTN -> SIP trunk), and per-GB charges for the bytes a TURN relay forwards and
for egress from a cloud. Both come from the bit rate on the wire, which depends on the codec,
the packet time and what is wrapped around each packet (IP/UDP/RTP, the SRTP tag, TURN's
ChannelData header or Send/Data indication, a WebSocket frame around JSON with base64 audio).

Prices are **inputs**. The lab bakes in no price as a fact: :data:`EXAMPLE_PRICES` are
labelled examples for figures and tutorials, to be replaced by the reader's own contract.
Prefer the bit rate a call *measured* (``bitrate_kbps_wire`` in every result) over the
nominal one of :func:`wire_kbps`; both are accepted by :func:`cost_per_1000_min`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from .errors import ParameterError

__all__ = ["wire_kbps", "cost_per_1000_min", "EXAMPLE_PRICES", "TRANSPORT_WRAPPERS", "Prices", "PATHS", "cost_table"]

#: Bytes added per packet beyond IP/UDP/RTP by each wrapper (RFC 5766 ChannelData: 4-byte
#: header, padded to 4 bytes over TCP only; a Send/Data indication: 20-byte STUN header +
#: XOR-PEER-ADDRESS (12 for IPv4) + DATA attribute header (4) = 36 bytes; SRTP
#: AES_CM_128_HMAC_SHA1_80: a 10-byte tag).
TRANSPORT_WRAPPERS = {
    "rtp": 0,
    "turn-channeldata": 4,
    "turn-send": 36,
}

_IP4_UDP_RTP = 20 + 8 + 12
_IP4_TCP = 20 + 20


def _ws_media_bytes(payload_bytes: int, *, masked: bool) -> int:
    """One media-streams message (Twilio-style JSON + base64) in a WebSocket frame on TCP/IPv4."""
    text = json.dumps({"event": "media", "sequenceNumber": "1234", "streamSid": "MZ" + "0" * 32,
                       "media": {"track": "outbound", "chunk": "1234", "timestamp": "123456",
                                 "payload": base64.b64encode(b"\0" * payload_bytes).decode()}})
    n = len(text)
    header = 2 if n < 126 else (4 if n < 65536 else 10)
    return n + header + (4 if masked else 0) + _IP4_TCP


def wire_kbps(codec: str = "pcmu", *, ptime_ms: float = 20.0, transport: str = "rtp", srtp: bool = False,
              bitrate: int | None = None) -> float:
    """Nominal bit rate on the wire, one direction, in kbit/s (IPv4, no link layer).

    Parameters
    ----------
    codec : str
        Registry name; its nominal bit rate unless ``bitrate`` is given.
    ptime_ms : float
        Audio per packet in ms.
    transport : {"rtp", "turn-channeldata", "turn-send", "ws"}
        ``ws``: media streams over a WebSocket (JSON + base64 mu-law; ``codec`` must be a
        G.711), client-to-server frames masked.
    srtp : bool
        SRTP/DTLS-SRTP authentication tag (10 bytes). WebRTC media always has it.
    bitrate : int, optional
        Codec bit rate in bit/s (e.g. Opus 16000).

    Returns
    -------
    float
    """
    from . import codecs

    c = codecs.get(codec)
    rate = float(bitrate if bitrate is not None else c.bitrate)
    if not 2.5 <= float(ptime_ms) <= 200:
        raise ParameterError(f"ptime_ms {ptime_ms!r} is outside 2.5..200")
    pps = 1000.0 / float(ptime_ms)
    payload = rate / 8.0 / pps
    if transport == "ws":
        if c.name not in ("pcmu", "pcma"):
            raise ParameterError(f"media streams over a WebSocket carry G.711 here, not {codec!r}")
        return _ws_media_bytes(int(round(payload)), masked=True) * 8 * pps / 1000.0
    if transport not in TRANSPORT_WRAPPERS:
        raise ParameterError(f"transport must be one of {sorted(TRANSPORT_WRAPPERS) + ['ws']}, got {transport!r}")
    per_packet = payload + _IP4_UDP_RTP + TRANSPORT_WRAPPERS[transport] + (10 if srtp else 0)
    return per_packet * 8 * pps / 1000.0


@dataclass(frozen=True)
class Prices:
    """Prices as inputs (currency units of the reader's choice).

    Attributes
    ----------
    carrier_per_min : float
        Carrier/SIP-trunk rate per minute of call.
    turn_per_gb : float
        TURN relay charge per GB (10^9 bytes) forwarded.
    egress_per_gb : float
        Cloud egress charge per GB leaving the agent's network.
    label : str
        Where the numbers come from ("example", "our contract 2026-11", ...).
    """

    carrier_per_min: float = 0.0
    turn_per_gb: float = 0.0
    egress_per_gb: float = 0.0
    label: str = "inputs"

    def __post_init__(self) -> None:
        for k in ("carrier_per_min", "turn_per_gb", "egress_per_gb"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ParameterError(f"{k} must be a number >= 0, got {v!r}")


#: Labelled EXAMPLES for tutorials and figures: not facts, not current prices.
EXAMPLE_PRICES = Prices(carrier_per_min=0.005, turn_per_gb=0.40, egress_per_gb=0.09,
                        label="example prices (illustrative, not quotes)")


def cost_per_1000_min(*, up_kbps: float, down_kbps: float, prices: Prices, phone_leg: bool = False,
                      relayed: bool = False, egress: bool = True) -> dict[str, Any]:
    """Cost of 1,000 minutes of calls on one path.

    Parameters
    ----------
    up_kbps, down_kbps : float
        Wire bit rate caller -> agent and agent -> caller in kbit/s (measured or :func:`wire_kbps`).
    prices : Prices
    phone_leg : bool
        The path includes a carrier leg billed per minute.
    relayed : bool
        Media crosses a TURN relay (both directions are forwarded, and billed, once).
    egress : bool
        The agent's sent audio (``down_kbps``) is billed as egress.

    Returns
    -------
    dict
        ``gb_per_1000_min`` (both directions), ``carrier``, ``turn``, ``egress``, ``total``,
        ``prices_label``.
    """
    for name, v in (("up_kbps", up_kbps), ("down_kbps", down_kbps)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < 100000:
            raise ParameterError(f"{name} must be a bit rate in kbit/s, got {v!r}")
    seconds = 1000 * 60
    gb_up = up_kbps * 1000 / 8 * seconds / 1e9
    gb_down = down_kbps * 1000 / 8 * seconds / 1e9
    carrier = prices.carrier_per_min * 1000 if phone_leg else 0.0
    turn = prices.turn_per_gb * (gb_up + gb_down) if relayed else 0.0
    eg = prices.egress_per_gb * gb_down if egress else 0.0
    return {"gb_per_1000_min": gb_up + gb_down, "carrier": carrier, "turn": turn, "egress": eg,
            "total": carrier + turn + eg, "prices_label": prices.label}


#: Common ways a call reaches a voice agent: (codec, bitrate, transport, srtp, phone_leg, relayed).
PATHS: dict[str, dict[str, Any]] = {
    "phone: carrier + SIP trunk, G.711": dict(codec="pcmu", transport="rtp", srtp=False, phone_leg=True, relayed=False),
    "phone: carrier + SIP trunk, G.729": dict(codec="g729", transport="rtp", srtp=False, phone_leg=True, relayed=False),
    "browser: WebRTC Opus 24k, direct": dict(codec="opus", bitrate=24000, transport="rtp", srtp=True, phone_leg=False,
                                             relayed=False),
    "browser: WebRTC Opus 24k, via TURN": dict(codec="opus", bitrate=24000, transport="turn-channeldata", srtp=True,
                                               phone_leg=False, relayed=True),
    "browser: WebRTC Opus 16k, via TURN": dict(codec="opus", bitrate=16000, transport="turn-channeldata", srtp=True,
                                               phone_leg=False, relayed=True),
    "app: WebSocket media, mu-law": dict(codec="pcmu", transport="ws", srtp=False, phone_leg=False, relayed=False),
}


def cost_table(prices: Prices, paths: dict[str, dict[str, Any]] | None = None, *,
               measured_kbps: dict[str, float] | None = None) -> Any:
    """Cost per 1,000 minutes for each path, as a tidy table.

    Parameters
    ----------
    prices : Prices
    paths : dict, optional
        Name -> options as in :data:`PATHS` (default: those).
    measured_kbps : dict, optional
        Name -> a measured wire bit rate (kbit/s, each way), used instead of the nominal one.

    Returns
    -------
    pandas.DataFrame
        ``path``, ``wire_kbps``, ``kbps_source`` (measured / nominal), ``gb_per_1000_min``,
        ``carrier``, ``turn``, ``egress``, ``total``, ``prices_label``.
    """
    import pandas as pd

    rows = []
    for name, o in (paths or PATHS).items():
        if measured_kbps and name in measured_kbps:
            kbps, src = float(measured_kbps[name]), "measured"
        else:
            kbps, src = wire_kbps(o["codec"], transport=o["transport"], srtp=o.get("srtp", False),
                                  bitrate=o.get("bitrate")), "nominal"
        c = cost_per_1000_min(up_kbps=kbps, down_kbps=kbps, prices=prices, phone_leg=o["phone_leg"],
                              relayed=o["relayed"])
        rows.append({"path": name, "wire_kbps": kbps, "kbps_source": src, **c})
    return pd.DataFrame(rows)
