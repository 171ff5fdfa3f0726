"""Scenario: everything that defines one trial, in any mode and over any transport, as plain data.

A :class:`Scenario` is frozen and validated when made (a bad field is a
:class:`~voicelab.errors.ParameterError` naming the field). It round-trips through
:meth:`Scenario.to_dict` / :meth:`Scenario.from_dict` and YAML, and :meth:`Scenario.key`
is a stable hash of its canonical form (the same in every process, whatever
``PYTHONHASHSEED``), so a study can store it beside each result and resume by key.

>>> from voicelab.experiments import Scenario
>>> s = Scenario(mode="sim", codec="opus", channel="wifi", seed=3)
>>> s.uplink == s.downlink
True
>>> s.with_(**{"uplink.loss_rate": 0.05}).uplink.loss_rate
0.05

Which fields each mode and transport honour (anything else left at its default):

=============  ==========================================================================
mode           what runs
=============  ==========================================================================
``sim``        :func:`voicelab.sim.simulate_call` once per direction (transport ``sip``:
               the RTP media path); ``codec_params``, ``plc=False``, ``fec``, any channel
``loopback``   a live call on 127.0.0.1: ``sip`` (:func:`voicelab.calls.sip_call`, with
               ``sip_transport``, ``srtp``, ``auth``), ``webrtc``
               (:func:`voicelab.webrtc.call.webrtc_call`, ``codec_params`` ``bitrate``,
               ``dtx``, ``packet_loss_perc``; ``fec``) or ``ws``
               (:func:`voicelab.wsmedia.live.ws_call`, pcmu only); the channels are
               applied by userspace relays
``vnet``       a call on the virtual network behind NATs (:mod:`voicelab.vnetcall`):
               ``caller_nat``, ``agent_nat``, ``method``; ``uplink``/``downlink`` replace
               the caller's access link; ``virtual_time`` (sip only) runs it on a virtual
               clock (deterministic, faster than real time)
``path=...``   a real-world path (:func:`voicelab.hybrid.path_call`): ``mode="loopback"``
               (live legs on 127.0.0.1) or ``mode="vnet"`` (the PSTN paths' trunk leg on
               the network-namespace chain, root only; ``uplink``/``downlink`` impair its
               carrier link with the lab's channel model); ``codec`` is the browser's WebRTC codec on
               ``browser+gateway+...`` paths and ``pcmu`` (the trunk's G.711) otherwise;
               ``seconds``, ``speech``, ``seed``, ``jitter_buffer``; nothing else
=============  ==========================================================================
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import ParameterError
from ..net import ChannelConfig, preset
from ..sim.scenario import _plain, canonical_jitter_buffer

__all__ = ["Scenario", "MODES", "TRANSPORTS", "SIP_TRANSPORTS", "VNET_METHODS", "NAT_PRESETS", "PATH_MODES",
           "BROWSER_CODECS"]

#: Where a trial runs.
MODES = ("sim", "loopback", "vnet")
#: How the media travels.
TRANSPORTS = ("sip", "webrtc", "ws")
#: SIP signalling transports (loopback SIP calls).
SIP_TRANSPORTS = ("udp", "tcp", "tls", "ws")
#: NAT traversal methods of ``vnet`` mode, by transport (see :mod:`voicelab.vnetcall`).
VNET_METHODS = {
    "sip": ("sip", "sip-comedia", "sip-relay"),
    "webrtc": ("webrtc-stun", "webrtc-turn", "webrtc-relay-only"),
}
#: NAT presets of ``vnet`` mode (:data:`voicelab.net.nat.PRESETS`).
NAT_PRESETS = ("open", "full-cone", "restricted-cone", "port-restricted-cone", "symmetric")
#: Codecs the WebRTC peers negotiate (:data:`voicelab.webrtc.peer.WEBRTC_CODECS`; kept
#: here so that making a Scenario does not import aiortc; a test checks they agree).
WEBRTC_CODECS = ("g722", "opus", "pcma", "pcmu")
#: codec_params a loopback WebRTC call applies (the lab's Opus encoder).
WEBRTC_CODEC_PARAMS = ("bitrate", "dtx", "fec", "packet_loss_perc")
#: Speech seconds allowed per mode (each direction).
SECONDS_RANGE = {"sim": (1.0, 600.0), "loopback": (1.0, 60.0), "vnet": (0.5, 60.0)}
#: Modes a ``path`` runs in (:data:`voicelab.hybrid.NETS`: loopback sockets, or the namespace chain).
PATH_MODES = ("loopback", "vnet")
#: The browser's codecs on ``browser+gateway+...`` paths (:func:`voicelab.hybrid.browser_gateway_call`).
BROWSER_CODECS = ("g722", "opus", "pcma", "pcmu")
#: Fields left out of the canonical form while at their default (fields added later: the
#: keys of scenarios written before them do not move, so stores still resume).
_OMIT_AT_DEFAULT = {"path": None}
#: Fields whose dotted names reach inside (``uplink.loss_rate``, ``codec_params.bitrate``).
_CHANNEL_FIELDS = ("uplink", "downlink")


def _channel(value: Any, name: str) -> ChannelConfig | None:
    if value is None or isinstance(value, ChannelConfig):
        return value
    if isinstance(value, str):
        try:
            return preset(value)
        except ParameterError as exc:
            raise ParameterError(f"{name}: {exc}") from None
    if isinstance(value, Mapping):
        try:
            return ChannelConfig.from_dict(dict(value))
        except (ParameterError, TypeError) as exc:
            raise ParameterError(f"{name}: {exc}") from None
    raise ParameterError(f"{name} must be a ChannelConfig, a dict of channel settings, a preset name or None, "
                         f"got {type(value).__name__}")


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if _plain(value) in (0, 1) and not isinstance(value, str):
        return bool(value)
    raise ParameterError(f"{name} must be true or false, got {value!r}")


def _choice(value: Any, name: str, choices: tuple) -> Any:
    if isinstance(value, str) and value.strip().lower() in choices:
        return value.strip().lower()
    raise ParameterError(f"unknown {name} {value!r}: use one of " + ", ".join(repr(c) for c in choices))


def _path(value: Any, mode: str, transport: str) -> str | None:
    """The canonical path spelling (``hybrid.parse_path``'s rules), or None; checks mode and transport."""
    if value is None:
        return None
    from ..hybrid import parse_path

    if not isinstance(value, str):
        raise ParameterError(f"path must be a path spelled like 'pstn-national-mobile+trunk+sbc' or None, got {value!r}")
    spec = "+".join(part.strip().lower() for part in value.split("+"))
    try:
        parts = parse_path(spec)
    except ParameterError as exc:
        raise ParameterError(f"path {value!r}: {exc}") from None
    if mode not in PATH_MODES:
        raise ParameterError(f"path {spec!r} needs mode='loopback' (live legs on 127.0.0.1) or mode='vnet' (the trunk "
                             f"leg on the namespace chain), not mode={mode!r}: its trunk leg is live")
    if parts["browser"] and mode != "loopback":
        raise ParameterError(f"path {spec!r} runs on loopback only (the gateway's legs): mode='loopback'")
    if transport != "sip":
        raise ParameterError(f"transport {transport!r} does not apply to path {spec!r}: every path reaches its far end "
                             "over SIP (transport='sip'); the path names its other legs")
    return spec


@dataclass(frozen=True)
class Scenario:
    """One trial: where it runs, over what, with which codec, network and speech.

    Parameters
    ----------
    mode : {"sim", "loopback", "vnet"}
        ``sim``: the offline media simulator; ``loopback``: a live call on 127.0.0.1;
        ``vnet``: a call on the virtual network with NATs.
    transport : {"sip", "webrtc", "ws"}
        SIP + RTP, WebRTC (ICE + DTLS-SRTP, aiortc) or a WebSocket media stream
        (``sim`` mode simulates RTP: ``sip`` only; ``vnet``: ``sip`` or ``webrtc``).
    sip_transport : {"udp", "tcp", "tls", "ws"}
        SIP signalling transport (loopback SIP only; elsewhere ``udp``).
    srtp : bool
        SDES-keyed SRTP (loopback SIP only; WebRTC is always DTLS-SRTP).
    auth : str or None
        ``"user:password"``: the agent challenges with digest (loopback SIP only).
    codec : str
        Codec registry name or alias (``voicelab codecs``).
    codec_params : Mapping
        Codec parameters (``bitrate`` in bit/s, ``frame_ms``, ``fec``, ``dtx``,
        ``packet_loss_perc``): any in ``sim``; ``bitrate``, ``dtx``, ``fec``,
        ``packet_loss_perc`` for loopback WebRTC; none elsewhere (the engines there
        negotiate the codec's defaults).
    jitter_buffer : str
        ``"fixed:MS"``, ``"adaptive"`` or ``"adaptive:MIN:MAX"`` (both ends).
    plc : bool
        Conceal lost frames; False (silence) only in ``sim``.
    fec : bool
        Opus in-band FEC (``sim`` and loopback WebRTC).
    uplink, downlink : ChannelConfig, dict, str or None
        Impairment caller -> agent and agent -> caller (a
        :class:`voicelab.net.ChannelConfig`, its dict, or a preset name such as
        ``"wifi"``). None: no impairment (loopback: no relay; vnet: the default access
        link of :data:`voicelab.vnetcall.DEFAULT_LINKS`).
    channel : ChannelConfig, dict, str or None
        Shorthand that sets both ``uplink`` and ``downlink`` (then stored as those; it
        is always None after construction).
    caller_nat, agent_nat : str
        ``vnet`` NAT presets (:data:`NAT_PRESETS`).
    method : str or None
        ``vnet`` traversal method (:data:`VNET_METHODS`); None: ``sip`` or
        ``webrtc-stun`` by transport.
    speech : str
        ``"default"`` (the corpus), ``"corpus:N"`` (item N) or an example name
        (``"harvard"``).
    input : str or None
        A WAV file to send instead of ``speech`` (not in ``vnet``).
    seconds : float
        Speech sent in each direction, s (sim 1..600, loopback 1..60, vnet 0.5..60).
    seed : int
        Seed of every random choice (network fates, RTP and SIP initial values).
    virtual_time : bool
        Run a ``vnet`` SIP call on a virtual clock (deterministic); an error elsewhere.
    path : str or None
        A real-world path instead of a plain call, spelled as for ``voicelab call --path``
        (:func:`voicelab.hybrid.parse_path`): ``"PSTN-PRESET+trunk[+sbc|+relay]"``,
        ``"browser+gateway+sip"`` or ``"browser+gateway+PSTN-PRESET"``; run by
        :func:`voicelab.hybrid.path_call` (see the module docstring for the fields it takes).
        Stored lower-case; None (a plain call) is left out of :meth:`to_dict`, so the keys of
        scenarios without a path are what they were before this field existed.

    Raises
    ------
    ParameterError
        A field is out of range, unknown, or does not apply to the mode/transport; the
        message names the field.
    """

    mode: str = "sim"
    transport: str = "sip"
    sip_transport: str = "udp"
    srtp: bool = False
    auth: str | None = None
    codec: str = "pcmu"
    codec_params: Mapping[str, Any] = field(default_factory=dict)
    jitter_buffer: str = "fixed:60"
    plc: bool = True
    fec: bool = False
    uplink: ChannelConfig | None = None
    downlink: ChannelConfig | None = None
    channel: ChannelConfig | None = None
    caller_nat: str = "open"
    agent_nat: str = "open"
    method: str | None = None
    speech: str = "default"
    input: str | None = None
    seconds: float = 4.0
    seed: int = 0
    virtual_time: bool = False
    path: str | None = None

    def __post_init__(self) -> None:  # noqa: C901 - one check per field, in field order
        from ..codecs import canonical_name

        put = object.__setattr__
        mode = _choice(self.mode, "mode", MODES)
        transport = _choice(self.transport, "transport", TRANSPORTS)
        put(self, "mode", mode)
        put(self, "transport", transport)
        if mode == "sim" and transport != "sip":
            raise ParameterError(f"transport {transport!r} has no sim mode: sim simulates the RTP media path "
                                 "(transport='sip'); use mode='loopback' for a live call")
        if mode == "vnet" and transport == "ws":
            raise ParameterError("transport 'ws' has no vnet mode: use transport 'sip' or 'webrtc' (or mode='loopback')")
        path = _path(self.path, mode, transport)
        put(self, "path", path)
        sip_live = mode == "loopback" and transport == "sip" and path is None
        no_path = "" if path is None else f", without a path (path {path!r} runs its own SIP legs: UDP, RTP, no auth)"

        put(self, "sip_transport", _choice(self.sip_transport, "sip_transport", SIP_TRANSPORTS))
        if self.sip_transport != "udp" and not sip_live:
            raise ParameterError(f"sip_transport {self.sip_transport!r} applies to mode='loopback', transport='sip' only"
                                 + no_path)
        put(self, "srtp", _bool(self.srtp, "srtp"))
        if self.srtp and not sip_live:
            raise ParameterError("srtp applies to mode='loopback', transport='sip' only (WebRTC is always DTLS-SRTP)"
                                 + no_path)
        auth = self.auth
        if isinstance(auth, (tuple, list)) and len(auth) == 2 and all(isinstance(a, str) for a in auth):
            auth = f"{auth[0]}:{auth[1]}"
        if auth is not None:
            if not isinstance(auth, str) or ":" not in auth or not auth.split(":", 1)[0]:
                raise ParameterError(f"auth must be 'user:password' or None, got {self.auth!r}")
            if not sip_live:
                raise ParameterError("auth applies to mode='loopback', transport='sip' only" + no_path)
        put(self, "auth", auth)

        # codec: one spelling per scenario, so equal scenarios have equal keys
        if not isinstance(self.codec_params, Mapping):
            raise ParameterError(
                f"codec_params must be a mapping of codec parameters, got {type(self.codec_params).__name__}")
        try:
            name, alias_params = canonical_name(self.codec)
        except ParameterError as exc:
            raise ParameterError(f"codec: {exc}") from None
        params = {str(k): _plain(v) for k, v in self.codec_params.items()}
        for k, v in alias_params.items():
            if k in params and params[k] != v:
                raise ParameterError(f"codec {self.codec!r} means {k}={v}, but codec_params gives {k}={params[k]}")
            params[k] = v
        put(self, "codec", name)
        put(self, "codec_params", dict(sorted(params.items())))
        if transport == "ws" and name != "pcmu":
            raise ParameterError(f"codec {name!r}: the WebSocket media stream carries only pcmu (8 kHz mu-law)")
        if transport == "webrtc" and name not in WEBRTC_CODECS:
            raise ParameterError(f"codec {name!r}: WebRTC negotiates one of {list(WEBRTC_CODECS)}")
        if path is not None:
            if path.startswith("browser"):
                if name not in BROWSER_CODECS:
                    raise ParameterError(f"codec {name!r}: on path {path!r} the codec is the browser's WebRTC codec, "
                                         f"one of {list(BROWSER_CODECS)}")
            elif name != "pcmu":
                raise ParameterError(f"codec {name!r}: on path {path!r} the trunk leg is G.711 (codec 'pcmu'); "
                                     "the phone side's codecs are the preset's")
        if params and mode != "sim":
            allowed = WEBRTC_CODEC_PARAMS if (mode == "loopback" and transport == "webrtc") else ()
            bad = sorted(set(params) - set(allowed))
            if bad:
                where = f"mode={mode!r}, transport={transport!r}"
                raise ParameterError(f"codec_params {bad} are not applied in {where}; "
                                     + (f"allowed: {list(allowed)}" if allowed else "only sim and loopback webrtc take codec_params"))
        put(self, "jitter_buffer", canonical_jitter_buffer(self.jitter_buffer))
        put(self, "plc", _bool(self.plc, "plc"))
        if not self.plc and mode != "sim":
            raise ParameterError("plc=False (silence for lost frames) exists in sim mode only; live receivers conceal")
        put(self, "fec", _bool(self.fec, "fec"))
        if self.fec and not (mode == "sim" or (mode == "loopback" and transport == "webrtc")):
            raise ParameterError("fec applies to sim mode and loopback webrtc calls only")

        # network: ``channel`` is a shorthand for both directions
        up = _channel(self.uplink, "uplink")
        down = _channel(self.downlink, "downlink")
        if self.channel is not None:
            ch = _channel(self.channel, "channel")
            if (up is not None and up != ch) or (down is not None and down != ch):
                raise ParameterError("give either channel (both directions) or uplink/downlink, not both")
            up = down = ch
        put(self, "uplink", up)
        put(self, "downlink", down)
        put(self, "channel", None)
        put(self, "caller_nat", _choice(self.caller_nat, "caller_nat", NAT_PRESETS))
        put(self, "agent_nat", _choice(self.agent_nat, "agent_nat", NAT_PRESETS))
        if path is not None:
            if self.caller_nat != "open" or self.agent_nat != "open" or self.method is not None:
                raise ParameterError(f"caller_nat/agent_nat/method do not apply to path {path!r} "
                                     "(a path has no NATs: mode='vnet' runs it on the namespace chain)")
            if (up is not None or down is not None) and mode != "vnet":
                raise ParameterError(f"uplink/downlink with path {path!r} impair the carrier link of the namespace "
                                     "chain: mode='vnet' only (the loopback legs run unimpaired)")
        elif mode != "vnet":
            if self.caller_nat != "open" or self.agent_nat != "open":
                raise ParameterError("caller_nat/agent_nat apply to mode='vnet' only")
            if self.method is not None:
                raise ParameterError(f"method {self.method!r} applies to mode='vnet' only")
        else:
            methods = VNET_METHODS[transport]
            put(self, "method", methods[0] if self.method is None else _choice(self.method, "method", methods))

        # speech
        if not isinstance(self.speech, str) or not self.speech:
            raise ParameterError(f"speech must be a name such as 'default', 'corpus:3' or 'harvard', got {self.speech!r}")
        if self.input is not None:
            if not isinstance(self.input, (str, bytes)) and not hasattr(self.input, "__fspath__"):
                raise ParameterError(f"input must be a WAV file path, got {self.input!r}")
            put(self, "input", os.fsdecode(self.input))
            if mode == "vnet":
                raise ParameterError("input (a WAV file) is not supported in vnet mode: use speech")
            if path is not None:
                raise ParameterError(f"input (a WAV file) is not supported with path {path!r}: use speech")
        lo, hi = SECONDS_RANGE[mode]
        try:
            seconds = float(self.seconds)
        except (TypeError, ValueError):
            raise ParameterError(f"seconds must be a number, got {self.seconds!r}") from None
        if not lo <= seconds <= hi:
            raise ParameterError(f"seconds {seconds:g} is outside {lo:g}..{hi:g} for mode={mode!r}")
        put(self, "seconds", seconds)
        seed = _plain(self.seed)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ParameterError(f"seed must be a non-negative integer, got {self.seed!r}")
        put(self, "seed", seed)
        put(self, "virtual_time", _bool(self.virtual_time, "virtual_time"))
        if self.virtual_time and path is not None:
            raise ParameterError(f"virtual_time does not apply to path {path!r}: its legs run in real time "
                                 "(turns over a path on the virtual clock: voicelab.hybrid.path_turns)")
        if self.virtual_time and not (mode == "vnet" and transport == "sip"):
            raise ParameterError(
                "virtual_time applies to mode='vnet', transport='sip' only (sim is always deterministic; "
                "live loopback and WebRTC calls run on the wall clock)")

    def __hash__(self) -> int:  # codec_params is a dict: hash the canonical form instead
        return hash(self.to_json())

    # --------------------------------------------------------------------- plain data
    @property
    def deterministic(self) -> bool:
        """Whether the same scenario gives the same result in every process (sim, vnet in virtual time)."""
        return self.mode == "sim" or (self.mode == "vnet" and self.virtual_time)

    def to_dict(self) -> dict[str, Any]:
        """Canonical plain-data form (JSON/YAML-ready; ``channel`` is folded into uplink/downlink)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "channel":
                continue
            v = getattr(self, f.name)
            if f.name in _CHANNEL_FIELDS:
                v = None if v is None else v.to_dict()
            elif f.name == "codec_params":
                v = dict(sorted(v.items()))
            elif f.name in _OMIT_AT_DEFAULT and v == _OMIT_AT_DEFAULT[f.name]:
                continue
            out[f.name] = v
        return out

    @classmethod
    def fields(cls) -> list[str]:
        """Names accepted by the constructor and :meth:`from_dict`."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Scenario":
        """Inverse of :meth:`to_dict`; unknown keys are a ParameterError listing the valid ones."""
        if not isinstance(data, Mapping):
            raise ParameterError(f"a scenario is a mapping of fields, got {type(data).__name__}")
        names = cls.fields()
        unknown = sorted(set(map(str, data)) - set(names))
        if unknown:
            raise ParameterError(f"unknown scenario field(s) {unknown}; valid: {', '.join(names)}")
        return cls(**{str(k): v for k, v in data.items()})

    def to_yaml(self) -> str:
        """The scenario as a YAML document (:meth:`from_yaml` reads it back)."""
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, source: str | os.PathLike) -> "Scenario":
        """A scenario from YAML text or a YAML file path (a top-level ``scenario:`` key is accepted)."""
        import yaml

        text = source
        if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source
                                               and source.endswith((".yaml", ".yml"))):
            try:
                with open(source, encoding="utf-8") as fh:
                    text = fh.read()
            except OSError as exc:
                raise ParameterError(f"cannot read scenario file {os.fsdecode(source)!r}: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ParameterError(f"scenario YAML does not parse: {str(exc).splitlines()[0]}") from None
        if isinstance(data, Mapping) and set(data) == {"scenario"}:
            data = data["scenario"]
        if data is None:
            data = {}
        return cls.from_dict(data)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): what :meth:`key` hashes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    def key(self) -> str:
        """Stable 16-hex-digit key: the start of the SHA-256 of :meth:`to_json`.

        The same scenario has the same key in every process and Python version
        (``PYTHONHASHSEED`` plays no part); any change of any field changes it.
        """
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def with_(self, **changes: Any) -> "Scenario":
        """A copy with some fields changed (validated again).

        Dotted names reach inside: ``uplink.loss_rate``, ``downlink.delay_ms``,
        ``channel.loss_rate`` (both directions), ``codec_params.bitrate``. ``channel=``
        sets both directions.

        >>> Scenario().with_(**{"channel.loss_rate": 0.02}).downlink.loss_rate
        0.02
        """
        plain: dict[str, Any] = {}
        chan: dict[str, dict[str, Any]] = {"uplink": {}, "downlink": {}}
        cparams = dict(self.codec_params)
        names = set(self.fields())
        for k, v in changes.items():
            head, _, tail = k.partition(".")
            if tail and head in ("uplink", "downlink", "channel"):
                for d in ((head,) if head != "channel" else _CHANNEL_FIELDS):
                    chan[d][tail] = v
            elif tail and head == "codec_params":
                cparams[tail] = v
            elif tail or k not in names:
                raise ParameterError(f"cannot change scenario field {k!r}; fields: {', '.join(sorted(names))}, "
                                     "uplink.<field>, downlink.<field>, channel.<field>, codec_params.<name>")
            else:
                plain[k] = v
        if "channel" in plain:
            ch = _channel(plain.pop("channel"), "channel")
            plain.setdefault("uplink", ch)
            plain.setdefault("downlink", ch)
        for d in _CHANNEL_FIELDS:
            if chan[d]:
                base = _channel(plain.get(d, getattr(self, d)), d) or ChannelConfig()
                try:
                    plain[d] = dataclasses.replace(base, **chan[d])
                except TypeError:
                    known = ", ".join(f.name for f in dataclasses.fields(ChannelConfig))
                    raise ParameterError(f"unknown {d} field(s) {sorted(chan[d])}; valid: {known}") from None
        if "codec_params" not in plain and cparams != dict(self.codec_params):
            plain["codec_params"] = cparams
        return dataclasses.replace(self, **plain)
