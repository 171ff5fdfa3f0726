"""Scenario: everything that defines one simulated call, as plain data.

A :class:`Scenario` is frozen, hashable through :meth:`Scenario.key`, and round-trips
through :meth:`Scenario.to_dict` / :meth:`Scenario.from_dict`, so sweeps can store it
beside each result and resume by key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import ParameterError
from ..net import ChannelConfig, preset
from ..rtp.jitterbuffer import canonical_jitter_buffer, parse_jitter_buffer  # moved there; re-exported

__all__ = ["Scenario", "parse_jitter_buffer", "canonical_jitter_buffer"]


def _plain(value: Any) -> Any:
    """numpy scalars -> Python; integral floats -> int (so 24000.0 and 24000 are one key)."""
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass(frozen=True)
class Scenario:
    """One simulated call.

    Parameters
    ----------
    codec : str
        Codec registry name (``voicelab codecs`` lists them).
    codec_params : Mapping
        Codec parameters (``bitrate`` in bit/s, ``frame_ms``, Opus ``fec``,
        ``packet_loss_perc``, ``dtx``, ...), passed to :func:`voicelab.codecs.get`.
    channel : ChannelConfig or str
        Network path: a :class:`voicelab.net.ChannelConfig` or a preset name.
    jitter_buffer : str
        ``"fixed:MS"`` or ``"adaptive"`` (see :func:`parse_jitter_buffer`).
    plc : bool
        Conceal lost frames (codec PLC or the generic one); False inserts silence.
    fec : bool
        Rebuild a lost frame from the next packet's redundancy when the codec has
        FEC (Opus in-band FEC). Setting it also enables the encoder's FEC.
    speech : str
        Which speech to send (see :func:`voicelab.audio.load_speech`): ``"default"``
        (the natural corpus shipped in the package, plus ``VOICELAB_DATA``),
        ``"corpus:ID"`` for one item (:func:`voicelab.audio.corpus_items`), ``"corpus:N"``
        for item N, ``"espeak"`` for eSpeak NG speech, or an example name
        (``"harvard"``, ``"css"``).
    input : str or None
        Path of a WAV file to send instead of ``speech``.
    level_db : float
        Active speech level (ITU-T P.56, dBov) the input is normalised to.
    max_speech_s : float
        Longest stretch of speech used (the default corpus is concatenated up to it).
    seed : int
        Seed of every random choice (network fates, RTP initial values).
    """

    codec: str = "pcmu"
    codec_params: Mapping[str, Any] = field(default_factory=dict)
    channel: ChannelConfig | str = field(default_factory=ChannelConfig)
    jitter_buffer: str = "fixed:60"
    plc: bool = True
    fec: bool = False
    speech: str = "default"
    input: str | None = None
    level_db: float = -26.0
    max_speech_s: float = 12.0
    seed: int = 0

    def __post_init__(self) -> None:
        from ..codecs import canonical_name

        put = object.__setattr__
        if isinstance(self.channel, str):
            put(self, "channel", preset(self.channel))
        elif isinstance(self.channel, Mapping):
            put(self, "channel", ChannelConfig.from_dict(dict(self.channel)))
        elif not isinstance(self.channel, ChannelConfig):
            raise ParameterError(
                f"channel must be a ChannelConfig, a dict or a preset name, got {type(self.channel).__name__}"
            )
        if not isinstance(self.codec_params, Mapping):
            raise ParameterError(
                f"codec_params must be a mapping of codec parameters, got {type(self.codec_params).__name__}"
            )
        # One spelling per scenario, so equal scenarios have equal keys.
        name, alias_params = canonical_name(self.codec)
        params = {str(k): _plain(v) for k, v in self.codec_params.items()}
        for k, v in alias_params.items():
            if k in params and params[k] != v:
                raise ParameterError(f"codec {self.codec!r} means {k}={v}, but codec_params gives {k}={params[k]}")
            params[k] = v
        put(self, "codec", name)
        put(self, "codec_params", dict(sorted(params.items())))
        put(self, "jitter_buffer", canonical_jitter_buffer(self.jitter_buffer))
        for fname, lo, hi, unit in (("level_db", -60.0, 0.0, "dBov"), ("max_speech_s", 1.0, 600.0, "s")):
            raw = getattr(self, fname)
            try:
                val = float(raw)
            except (TypeError, ValueError):
                raise ParameterError(f"{fname} must be a number, got {raw!r}") from None
            if not lo <= val <= hi:
                raise ParameterError(f"{fname} {val:g} {unit} is outside {lo:g}..{hi:g}")
            put(self, fname, val)
        seed = _plain(self.seed)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ParameterError(f"seed must be a non-negative integer, got {self.seed!r}")
        put(self, "seed", seed)
        for fname in ("plc", "fec"):
            if not isinstance(getattr(self, fname), (bool,)) and _plain(getattr(self, fname)) not in (0, 1):
                raise ParameterError(f"{fname} must be true or false, got {getattr(self, fname)!r}")
            put(self, fname, bool(getattr(self, fname)))
        if self.input is not None and not isinstance(self.input, (str, bytes)) and not hasattr(self.input, "__fspath__"):
            raise ParameterError(f"input must be a file path, got {self.input!r}")
        if self.input is not None:
            put(self, "input", str(self.input))
        if not isinstance(self.speech, str):
            raise ParameterError(f"speech must be a name such as 'default' or 'harvard', got {self.speech!r}")

    # ----------------------------------------------------------------- helpers
    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-ready)."""
        d = dataclasses.asdict(self)
        d["channel"] = self.channel.to_dict()  # type: ignore[union-attr]
        d["codec_params"] = dict(sorted(self.codec_params.items()))
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Scenario":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ParameterError(
                f"unknown scenario field(s) {sorted(unknown)}; known: {sorted(names)}"
            )
        return cls(**dict(data))

    def with_(self, **changes: Any) -> "Scenario":
        """A copy with some fields changed. Dotted names reach into the channel
        (``channel.loss_rate``) and the codec parameters (``codec_params.bitrate``)."""
        plain: dict[str, Any] = {}
        chan: dict[str, Any] = {}
        cparams = dict(self.codec_params)
        for k, v in changes.items():
            if k.startswith("channel."):
                chan[k.split(".", 1)[1]] = v
            elif k.startswith("codec_params."):
                cparams[k.split(".", 1)[1]] = v
            else:
                plain[k] = v
        try:
            if chan:
                channel = plain.pop("channel", self.channel)
                if isinstance(channel, str):
                    channel = preset(channel)
                elif isinstance(channel, Mapping):
                    channel = ChannelConfig.from_dict(dict(channel))
                plain["channel"] = dataclasses.replace(channel, **chan)
            if cparams != dict(self.codec_params) and "codec_params" not in plain:
                plain["codec_params"] = cparams
            return dataclasses.replace(self, **plain)
        except TypeError as exc:
            known = ", ".join(f.name for f in dataclasses.fields(self))
            raise ParameterError(
                f"cannot change scenario ({exc}); fields: {known}, channel.<field>, codec_params.<name>"
            ) from None

    def key(self) -> str:
        """A stable short hash of the scenario (for resumable sweeps)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
