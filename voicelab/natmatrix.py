"""The NAT traversal matrix: every caller NAT x agent NAT x method, one short call each.

"NAT traversal is complex" for SIP and "built in" for WebRTC is the most quoted
difference between the two. :func:`nat_matrix` shows exactly which combinations carry
audio, in which direction, along which path, and what each fix costs in setup time,
path delay and relay bytes::

    from voicelab.natmatrix import nat_matrix, outcome_grid
    cells = nat_matrix(methods=("sip", "sip-comedia", "sip-relay"))   # ~15 s
    outcome_grid(cells)["sip"][("symmetric", "open")]                # 'caller->agent only'

Every cell is a real call of the lab's own stacks on the virtual network
(:mod:`voicelab.vnetcall`, which describes the topology and the methods): the SIP cells
run the lab's SIP caller and agent under a virtual clock (a 2 s call takes a fraction of
a second and is the same on every run); the WebRTC cells run two aiortc peers with the
lab's STUN and TURN servers in real time (aiortc keeps time on the wall clock), about
2 s each, and 5 s (``connect_timeout``) for a cell whose ICE fails.

Each cell also carries the textbook outcome (:func:`reference_outcome`) and whether the
measured one matches it, so a figure can mark disagreements; the known results are:

- ``sip``: audio reaches a side only when that side's SDP address is public: a NATed
  caller calling a public agent gets one-way audio (caller -> agent), and with both
  sides NATed no audio at all;
- ``sip-comedia``: when the agent is public, two-way for every caller NAT: the agent
  replies to the source of the caller's media, a mapping the caller's own packets
  opened (and which its NAT's filter therefore lets through); when the agent is NATed
  its private SDP address stops the caller's media, as in plain SIP;
- ``sip-relay``: two-way in every cell (both NATs only see replies to their own host's
  packets), at the price of the detour through the relay;
- ``webrtc-stun``: connects everywhere except port-restricted-cone <-> symmetric and
  symmetric <-> symmetric (libwebrtc's connectivity matrix);
- ``webrtc-turn`` and ``webrtc-relay-only``: connect everywhere.
"""

from __future__ import annotations

import asyncio
import time as _time
from typing import Any, Callable, Iterable, Sequence

from .errors import ParameterError
from .net.nat import PRESETS
from .vnetcall import METHODS, SIP_METHODS, vnet_sip_call, vnet_webrtc_call

__all__ = ["nat_matrix", "reference_outcome", "outcome_label", "outcome_grid", "PRESET_NAMES", "CELL_KEYS"]

#: The NAT presets, in the matrix's order (most to least permissive).
PRESET_NAMES = ("open", "full-cone", "restricted-cone", "port-restricted-cone", "symmetric")

#: Keys every cell has.
CELL_KEYS = (
    "caller_nat", "agent_nat", "method", "caller_to_agent", "agent_to_caller", "path", "setup_ms",
    "added_delay_ms", "route_ms", "relay_bytes", "expected_caller_to_agent", "expected_agent_to_caller",
    "matches_reference", "virtual_time", "wall_s", "drops", "error",
)

_STUN_FAILS = {("port-restricted-cone", "symmetric"), ("symmetric", "port-restricted-cone"), ("symmetric", "symmetric")}


def reference_outcome(caller_nat: str, agent_nat: str, method: str) -> tuple[bool, bool]:
    """The textbook outcome of one cell: (audio caller -> agent, audio agent -> caller).

    See the module docstring for the reasoning per method.

    Raises
    ------
    ParameterError
        Unknown preset or method.
    """
    for v, what in ((caller_nat, "caller"), (agent_nat, "agent")):
        if v not in PRESETS:
            raise ParameterError(f"unknown {what} NAT preset {v!r}: use one of " + ", ".join(map(repr, PRESETS)))
    if method not in METHODS:
        raise ParameterError(f"unknown method {method!r}: use one of " + ", ".join(map(repr, METHODS)))
    caller_public, agent_public = caller_nat == "open", agent_nat == "open"
    if method == "sip":
        return agent_public, caller_public
    if method == "sip-comedia":
        return agent_public, agent_public or caller_public
    if method == "webrtc-stun":
        ok = (caller_nat, agent_nat) not in _STUN_FAILS
        return ok, ok
    return True, True  # sip-relay, webrtc-turn, webrtc-relay-only


def outcome_label(caller_to_agent: bool, agent_to_caller: bool) -> str:
    """``"two-way"``, ``"caller->agent only"``, ``"agent->caller only"`` or ``"none"``."""
    if caller_to_agent and agent_to_caller:
        return "two-way"
    if caller_to_agent:
        return "caller->agent only"
    if agent_to_caller:
        return "agent->caller only"
    return "none"


def outcome_grid(cells: Iterable[dict]) -> dict[str, dict[tuple[str, str], str]]:
    """Cells as ``{method: {(caller_nat, agent_nat): outcome_label}}`` (for tables and heatmaps)."""
    grid: dict[str, dict[tuple[str, str], str]] = {}
    for c in cells:
        grid.setdefault(c["method"], {})[(c["caller_nat"], c["agent_nat"])] = outcome_label(
            bool(c["caller_to_agent"]), bool(c["agent_to_caller"]))
    return grid


def _names(values: Any, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(values, str):
        values = [v.strip() for v in values.split(",") if v.strip()]
    try:
        out = tuple(values)
    except TypeError:
        raise ParameterError(f"{what} must be a list of names, got {values!r}") from None
    if not out:
        raise ParameterError(f"{what} must name at least one of " + ", ".join(allowed))
    bad = [v for v in out if v not in allowed]
    if bad:
        raise ParameterError(f"unknown {what} {bad}: use names from " + ", ".join(allowed))
    return out


def _cell(caller_nat: str, agent_nat: str, method: str, r: dict | None, wall_s: float, error: str | None) -> dict:
    exp = reference_outcome(caller_nat, agent_nat, method)
    r = r or {}
    c2a, a2c = bool(r.get("caller_to_agent", False)), bool(r.get("agent_to_caller", False))
    return {
        "caller_nat": caller_nat,
        "agent_nat": agent_nat,
        "method": method,
        "caller_to_agent": c2a,
        "agent_to_caller": a2c,
        "path": r.get("path"),
        "setup_ms": r.get("setup_ms"),
        "added_delay_ms": r.get("added_delay_ms"),
        "route_ms": r.get("route_ms"),
        "relay_bytes": r.get("relay_bytes", 0),
        "expected_caller_to_agent": exp[0],
        "expected_agent_to_caller": exp[1],
        "matches_reference": (c2a, a2c) == exp and error is None,
        "virtual_time": bool(r.get("virtual_time", False)),
        "wall_s": wall_s,
        "drops": r.get("drops", {}),
        "error": error,
    }


def nat_matrix(
    *,
    presets: Sequence[str] = PRESET_NAMES,
    methods: Sequence[str] = METHODS,
    caller_presets: Sequence[str] | None = None,
    agent_presets: Sequence[str] | None = None,
    seconds: float = 2.0,
    seed: int = 0,
    quality: bool = False,
    codec: str | None = None,
    connect_timeout: float = 5.0,
    on_cell: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Run one short call per (caller NAT, agent NAT, method) and report each cell.

    Parameters
    ----------
    presets : sequence of str or comma-separated str
        NAT presets on both sides (``caller_presets`` / ``agent_presets`` override one side).
    methods : sequence of str or comma-separated str
        Any of ``sip``, ``sip-comedia``, ``sip-relay``, ``webrtc-stun``, ``webrtc-turn``,
        ``webrtc-relay-only``.
    seconds : float
        Speech per direction per call, 0.5..60 s.
    seed : int
    quality : bool
        Also measure mouth-to-ear delay and PESQ in each call (slower).
    codec : str, optional
        Default: PCMU for SIP, Opus for WebRTC.
    connect_timeout : float
        Seconds a WebRTC cell waits for ICE + DTLS before it counts as failed.
    on_cell : callable, optional
        Called with each cell as soon as it is done (progress).

    Returns
    -------
    list of dict
        One per cell, in (method, caller preset, agent preset) order, with at least
        :data:`CELL_KEYS`: the measured ``caller_to_agent`` / ``agent_to_caller`` (bool),
        ``path`` (``"direct"``, ``"srflx"``, ``"prflx"``, ``"relay"``,
        ``"media-relay"`` or None), ``setup_ms``, ``added_delay_ms`` (one way, ms),
        ``relay_bytes``, the reference outcome and whether it matched, ``wall_s``.

    Raises
    ------
    ParameterError
        Unknown preset or method, bad ``seconds``, or called while an event loop is
        running in this thread (from a notebook: ``await asyncio.to_thread(nat_matrix, ...)``).
    """
    presets = _names(presets, tuple(PRESETS), "NAT presets")
    callers = _names(caller_presets, tuple(PRESETS), "caller NAT presets") if caller_presets is not None else presets
    agents = _names(agent_presets, tuple(PRESETS), "agent NAT presets") if agent_presets is not None else presets
    methods = _names(methods, METHODS, "methods")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise ParameterError("nat_matrix() runs its own event loops: call it from plain code, or from a notebook "
                             "with 'await asyncio.to_thread(nat_matrix, ...)'")
    from .net.vclock import run_virtual
    from .vnetcall import _check_seconds

    _check_seconds(seconds)
    cells: list[dict] = []
    for method in methods:
        for cn in callers:
            for an in agents:
                options = dict(caller_nat=cn, agent_nat=an, method=method, seconds=seconds, seed=seed, quality=quality)
                w0 = _time.perf_counter()
                error = None
                r = None
                try:
                    if method in SIP_METHODS:
                        r = run_virtual(vnet_sip_call(codec=codec or "pcmu", **options))
                    else:
                        r = asyncio.run(vnet_webrtc_call(codec=codec or "opus", connect_timeout=connect_timeout, **options))
                except ParameterError as exc:  # a call that could not even be set up is a failed cell
                    error = str(exc)
                cell = _cell(cn, an, method, r, _time.perf_counter() - w0, error)
                cells.append(cell)
                if on_cell is not None:
                    on_cell(cell)
    return cells

