"""Result: one schema for what any trial produced, whatever the mode and transport.

A :class:`Result` holds the :class:`~voicelab.experiments.scenario.Scenario`, the
call-level metrics (:data:`CALL_METRICS`), the per-direction metrics
(:data:`DIRECTION_METRICS`, under ``"caller_to_agent"`` and ``"agent_to_caller"``),
whether the trial is deterministic, its warnings, the speech it sent, its provenance and
its wall time. A metric a mode does not produce is None (for example ``rtt_ms`` in sim,
``setup_ms`` in sim, ``ice_connect_ms`` outside WebRTC).

Two tidy forms:

* :meth:`Result.to_rows`: one dict per direction with exactly the columns
  :data:`RESULT_COLUMNS` (the long form a results store appends);
* :meth:`Result.to_row`: one wide dict (``caller_to_agent.mouth_to_ear_ms``, ...).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import ParameterError
from .scenario import Scenario

__all__ = [
    "Result",
    "RESULT_COLUMNS",
    "SCENARIO_COLUMNS",
    "CHANNEL_COLUMNS",
    "CALL_METRICS",
    "DIRECTION_METRICS",
    "META_COLUMNS",
    "DIRECTIONS",
]

#: The two directions of a call.
DIRECTIONS = ("caller_to_agent", "agent_to_caller")

#: Scenario columns of every row (``auth`` is a bool: the password stays out of tables;
#: ``codec_params`` is canonical JSON; ``path_spec`` is the scenario's ``path`` (None for a
#: plain call; the column ``path`` is the call metric below); ``scenario_json`` the whole
#: canonical scenario, its ``auth`` password replaced by ``***``; :meth:`Result.to_dict`
#: keeps it whole).
SCENARIO_COLUMNS = [
    "scenario_key", "mode", "transport", "sip_transport", "srtp", "auth", "codec", "codec_params",
    "jitter_buffer", "plc", "fec", "caller_nat", "agent_nat", "method", "speech", "input", "seconds",
    "seed", "virtual_time", "path_spec", "scenario_json",
]

#: The channel of a row's direction (uplink for caller_to_agent, downlink for
#: agent_to_caller); None when no impairment was configured.
CHANNEL_COLUMNS = [
    "channel.delay_ms", "channel.jitter_ms", "channel.jitter_distribution", "channel.reorder",
    "channel.loss_rate", "channel.burst_length", "channel.bandwidth_kbps", "channel.queue_packets",
    "channel.duplicate_rate",
]

#: Call-level metrics. Units: ms, bit/s for ``bitrate``, bytes for ``relay_bytes``.
#:
#: ``codec_negotiated`` (what SDP settled on), ``bitrate`` (the codec's nominal bit/s),
#: ``setup_ms`` (SIP INVITE -> 200/ACK, WebRTC offer -> connected, WebSocket dial ->
#: ``start``), ``post_dial_delay_ms`` (SIP), ``ice_gathering_ms``, ``ice_connect_ms``,
#: ``dtls_ms`` (loopback WebRTC, the caller's), ``ice_path`` (loopback WebRTC,
#: ``"caller/agent"`` candidate types, e.g. ``"host/host"``), ``connected`` (False when a
#: vnet WebRTC call's ICE failed), ``path`` (vnet: ``direct``, ``media-relay``, ``srflx``,
#: ``prflx``, ``relay`` or None when no audio flowed; a path scenario: its spelling, as
#: ``path_spec``), ``route_ms`` and
#: ``added_delay_ms`` (vnet: base one-way delay of the media path and its excess over the
#: direct route), ``relay_bytes`` (vnet), ``trace_sha256`` and ``trace_records`` (vnet
#: SIP: digest and length of the packet trace), ``speech_seconds`` (speech sent per
#: direction, s).
CALL_METRICS = [
    "codec_negotiated", "bitrate", "setup_ms", "post_dial_delay_ms", "ice_gathering_ms", "ice_connect_ms",
    "dtls_ms", "ice_path", "connected", "path", "route_ms", "added_delay_ms", "relay_bytes", "trace_sha256",
    "trace_records", "speech_seconds",
]

#: Per-direction metrics (the keys the live calls produce per direction).
#:
#: ``arrived`` (at least half of the packets sent were received), ``mouth_to_ear_ms``
#: (measured by cross-correlation, ms), ``mouth_to_ear_true_ms`` (sim only: the
#: simulator's ground truth), ``delay_confidence`` (0..1), ``pesq_nb``, ``pesq_wb``
#: (MOS-LQO), ``stoi`` (sim only), ``loss_rate`` (lost in transit, 0..1),
#: ``late_loss_rate`` (arrived after its playout time, 0..1), ``jitter_ms`` (RFC 3550
#: interarrival jitter; None in sim), ``rtt_ms`` (RTCP or ICE; None where not measured),
#: ``playout_delay_ms`` (jitter buffer), ``bitrate_kbps_wire`` (kbit/s with IP/UDP or
#: IP/TCP headers), ``r_factor``, ``mos_cqe`` (E-model), ``pacing_error_p99_ms`` (how
#: late the sender's frames left, live calls), ``packets_sent``, ``packets_received``,
#: ``concealed_frames``, ``late_frames``, ``transit_delay_ms_p99`` (WebSocket:
#: per-frame one-way transit), ``send_to_arrival_ms`` (WebRTC lab mode).
#:
#: Paths (a scenario with ``path``; None in every other mode): ``hops`` (the direction's
#: per-hop table, a list of ``{hop, kind, delay_ms, how, source}``; in :meth:`Result.to_rows`
#: compact JSON text), ``hops_measured_ms`` and ``hops_modelled_ms`` (the sums of its
#: hops whose ``how`` says measured / modelled, ms). On a path, ``caller_to_agent`` is the
#: caller (phone or browser) -> the far end and ``mouth_to_ear_ms`` is end to end.
DIRECTION_METRICS = [
    "arrived", "mouth_to_ear_ms", "mouth_to_ear_true_ms", "delay_confidence", "pesq_nb", "pesq_wb", "stoi",
    "loss_rate", "late_loss_rate", "jitter_ms", "rtt_ms", "playout_delay_ms", "bitrate_kbps_wire", "r_factor",
    "mos_cqe", "pacing_error_p99_ms", "packets_sent", "packets_received", "concealed_frames", "late_frames",
    "transit_delay_ms_p99", "send_to_arrival_ms", "hops", "hops_measured_ms", "hops_modelled_ms",
]

#: Bookkeeping columns: ``deterministic`` (sim and vnet virtual time: the same scenario
#: gives the same numbers in any process; live calls do not), ``speech_name``,
#: ``speech_item`` (corpus item id when one item was sent, else None),
#: ``speech_source``, ``synthetic_speech``, ``warnings`` (joined with `` | ``, "" when
#: none), ``wall_s`` (wall-clock seconds the trial took).
META_COLUMNS = [
    "deterministic", "speech_name", "speech_item", "speech_source", "synthetic_speech", "warnings", "wall_s",
]

#: The one column list of :meth:`Result.to_rows`, in order.
RESULT_COLUMNS = SCENARIO_COLUMNS + ["direction"] + CHANNEL_COLUMNS + CALL_METRICS + DIRECTION_METRICS + META_COLUMNS


def jsonable(x: Any) -> Any:
    """Plain JSON data: numpy scalars -> Python, non-finite floats -> None, tuples -> lists."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item) and not isinstance(x, (str, bytes)):
        try:
            x = x.item()
        except (TypeError, ValueError):
            return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return str(x)


def _hops_text(hops: Any) -> str | None:
    """A hop table as compact JSON text for a table cell (None stays None)."""
    if hops is None or isinstance(hops, str):
        return hops
    return json.dumps(jsonable(hops), sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass
class Result:
    """What one trial produced (see the module docstring).

    Attributes
    ----------
    scenario : Scenario
    call : dict
        :data:`CALL_METRICS` -> value (None where the mode has none).
    directions : dict
        ``{"caller_to_agent": {...}, "agent_to_caller": {...}}``, each
        :data:`DIRECTION_METRICS` -> value.
    deterministic : bool
        True for sim and vnet virtual time; False for live calls (their numbers vary
        from run to run).
    warnings : list of str
    speech : dict
        ``name``, ``item`` (corpus item id or None), ``source``, ``synthetic``.
    provenance : dict
        :func:`voicelab.experiments.provenance.provenance` (flat ``prov_*`` keys).
    wall_s : float
        Wall-clock duration of the trial, s.
    raw : dict
        The engine's own result (flat dict) for details beyond the schema (WebRTC
        timeline, getStats, ...). Not part of :meth:`to_dict` unless asked.
    """

    scenario: Scenario
    call: dict[str, Any]
    directions: dict[str, dict[str, Any]]
    deterministic: bool
    warnings: list[str] = field(default_factory=list)
    speech: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    wall_s: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.call = {k: self.call.get(k) for k in CALL_METRICS}
        self.directions = {d: {k: (self.directions.get(d) or {}).get(k) for k in DIRECTION_METRICS} for d in DIRECTIONS}
        self.call = jsonable(self.call)
        self.directions = jsonable(self.directions)

    def __getattr__(self, name: str) -> Any:
        # result.setup_ms: call-level metrics as attributes
        call = self.__dict__.get("call")
        if call is not None and name in call:
            return call[name]
        raise AttributeError(name)

    # ---------------------------------------------------------------------- tables
    def _scenario_columns(self) -> dict[str, Any]:
        s = self.scenario
        d = s.to_dict()
        row = {k: d.get(k) for k in SCENARIO_COLUMNS}
        row["scenario_key"] = s.key()
        row["auth"] = s.auth is not None
        row["codec_params"] = json.dumps(d["codec_params"], sort_keys=True, separators=(",", ":"))
        row["path_spec"] = s.path
        if s.auth is not None:  # the password stays out of tables (the key is the real scenario's)
            d["auth"] = s.auth.split(":", 1)[0] + ":***"
        row["scenario_json"] = json.dumps(d, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return row

    def _meta_columns(self) -> dict[str, Any]:
        return {
            "deterministic": bool(self.deterministic),
            "speech_name": self.speech.get("name"),
            "speech_item": self.speech.get("item"),
            "speech_source": self.speech.get("source"),
            "synthetic_speech": self.speech.get("synthetic"),
            "warnings": " | ".join(self.warnings),
            "wall_s": self.wall_s,
        }

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per direction with exactly :data:`RESULT_COLUMNS` (None where a mode has no value)."""
        base = self._scenario_columns()
        meta = self._meta_columns()
        rows = []
        for d in DIRECTIONS:
            cfg = self.scenario.uplink if d == "caller_to_agent" else self.scenario.downlink
            ch = cfg.to_dict() if cfg is not None else {}
            row = {**base, "direction": d}
            row.update({c: ch.get(c.split(".", 1)[1]) for c in CHANNEL_COLUMNS})
            row.update(self.call)
            row.update(self.directions[d])
            row["hops"] = _hops_text(row.get("hops"))
            row.update(meta)
            rows.append({c: row.get(c) for c in RESULT_COLUMNS})
        return rows

    def to_row(self) -> dict[str, Any]:
        """One wide tidy row: scenario columns, ``uplink.*``/``downlink.*``, call metrics,
        ``caller_to_agent.<metric>`` and ``agent_to_caller.<metric>``, bookkeeping."""
        row = self._scenario_columns()
        for d in ("uplink", "downlink"):
            cfg = getattr(self.scenario, d)
            ch = cfg.to_dict() if cfg is not None else {}
            row.update({f"{d}.{c.split('.', 1)[1]}": ch.get(c.split(".", 1)[1]) for c in CHANNEL_COLUMNS})
        row.update(self.call)
        for d in DIRECTIONS:
            row.update({f"{d}.{k}": (_hops_text(v) if k == "hops" else v) for k, v in self.directions[d].items()})
        row.update(self._meta_columns())
        return row

    # ------------------------------------------------------------------ plain data
    def to_dict(self, *, raw: bool = False) -> dict[str, Any]:
        """JSON-safe plain data (:meth:`from_dict` reads it back); ``raw=True`` adds the engine's dict."""
        out = {
            "scenario": self.scenario.to_dict(),
            "scenario_key": self.scenario.key(),
            "call": dict(self.call),
            "directions": {d: dict(v) for d, v in self.directions.items()},
            "deterministic": bool(self.deterministic),
            "warnings": list(self.warnings),
            "speech": dict(self.speech),
            "provenance": dict(self.provenance),
            "wall_s": self.wall_s,
        }
        if raw:
            out["raw"] = self.raw
        return jsonable(out)

    def to_json(self, *, indent: int | None = None, raw: bool = False) -> str:
        """:meth:`to_dict` as JSON text (sorted keys)."""
        return json.dumps(self.to_dict(raw=raw), sort_keys=True, indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Result":
        """Inverse of :meth:`to_dict`."""
        if not isinstance(data, Mapping) or "scenario" not in data:
            raise ParameterError("a result dict needs at least a 'scenario' key")
        known = {"scenario", "scenario_key", "call", "directions", "deterministic", "warnings", "speech",
                 "provenance", "wall_s", "raw"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ParameterError(f"unknown result key(s) {unknown}; valid: {', '.join(sorted(known))}")
        s = Scenario.from_dict(data["scenario"])
        return cls(
            scenario=s,
            call=dict(data.get("call") or {}),
            directions={d: dict(v) for d, v in (data.get("directions") or {}).items()},
            deterministic=bool(data.get("deterministic", s.deterministic)),
            warnings=list(data.get("warnings") or []),
            speech=dict(data.get("speech") or {}),
            provenance=dict(data.get("provenance") or {}),
            wall_s=data.get("wall_s"),
            raw=dict(data.get("raw") or {}),
        )
