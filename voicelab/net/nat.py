"""A NAT box as a sans-IO model, in the words of RFC 4787 (UDP) and RFC 5382 (TCP).

:class:`NatConfig` describes the box; :class:`Nat` translates packets one at a time::

    nat = Nat(NatConfig.preset("port-restricted-cone"), "198.51.100.10", seed=1)
    v = nat.outbound("udp", ("192.168.1.10", 5000), ("203.0.113.10", 3478), now=0.0)
    v.src                    # ('198.51.100.10', 5000): the mapped (public) source
    nat.inbound("udp", ("203.0.113.99", 9), v.src, now=0.1).reason   # filtered

Behaviour, in RFC 4787 terms
----------------------------
**Mapping** (section 4.1): which outbound packets share one external ``(ip, port)``.

- ``endpoint-independent``: every packet from one internal ``(ip, port)``, whatever
  the destination.
- ``address-dependent``: one mapping per destination IP.
- ``address-and-port-dependent``: one mapping per destination ``(ip, port)``.

**Filtering** (section 5): which inbound packets to an existing mapping get through.

- ``endpoint-independent``: any source.
- ``address-dependent``: sources whose IP the internal endpoint has sent to.
- ``address-and-port-dependent``: sources whose ``(ip, port)`` it has sent to.

An inbound packet with no mapping is dropped (``reason="no mapping"``).

**Port preservation** (section 4.2.1): a new mapping keeps the internal port when that
external port is free; otherwise (and always without port preservation) the port is
drawn at random from ``port_range`` with the seeded generator.

**Hairpinning** (section 6): a packet from inside to the NAT's own public address is
translated as it goes out and then comes back in as an inbound packet whose source is
the *external* (mapped) address of the sender (REQ-9), filtered like any inbound packet.
Without hairpinning it is dropped.

**Timeouts** (section 4.3, RFC 5382 section 5): a mapping, and each permission a mapping
holds for a remote endpoint, expires ``mapping_timeout_s`` (UDP) or ``tcp_timeout_s``
(TCP) after the last *outbound* packet that used it (only outbound traffic refreshes, as
REQ-6 allows). UDP and TCP have separate mapping tables and port spaces.

Presets (the classic names, see ``REFERENCE-FACTS.md``):

========================  ============================  ============================  ===========  ==========
preset                    mapping                       filtering                     port pres.   hairpin
========================  ============================  ============================  ===========  ==========
``open``                  (no translation, no filtering: a plain router)
``full-cone``             endpoint-independent          endpoint-independent          yes          yes
``restricted-cone``       endpoint-independent          address-dependent             yes          yes
``port-restricted-cone``  endpoint-independent          address-and-port-dependent    yes          yes
``symmetric``             address-and-port-dependent    address-and-port-dependent    no           no
========================  ============================  ============================  ===========  ==========

Port preservation and hairpinning are not part of the classic names; the values above
follow what Linux ``MASQUERADE`` does for the cones (keeps the port when it can) and
``--random-fully`` for the symmetric box. Change them with ``.with_(...)``.

Why our own: Pion's ``vnet`` NAT and the kernel's netfilter are the models this follows,
but the lab needs a deterministic Python object that reads no clock (``now`` is passed
in) and draws ports from a seeded :class:`numpy.random.Generator`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ParameterError

__all__ = [
    "NatConfig",
    "Nat",
    "NatVerdict",
    "NatMapping",
    "NatStats",
    "PRESETS",
    "MAPPING_BEHAVIOURS",
    "FILTERING_BEHAVIOURS",
    "PROTOCOLS",
]

Addr = tuple[str, int]

#: RFC 4787 mapping behaviours, from most to least permissive.
MAPPING_BEHAVIOURS = ("endpoint-independent", "address-dependent", "address-and-port-dependent")
#: RFC 4787 filtering behaviours, from most to least permissive.
FILTERING_BEHAVIOURS = ("endpoint-independent", "address-dependent", "address-and-port-dependent")
#: Transport protocols a NAT translates (separate tables and port spaces).
PROTOCOLS = ("udp", "tcp")


@dataclass(frozen=True)
class NatConfig:
    """How a NAT box maps and filters (RFC 4787 / RFC 5382 terms).

    Parameters
    ----------
    mapping : {"endpoint-independent", "address-dependent", "address-and-port-dependent"}
        Which outbound packets share one external address (RFC 4787 4.1).
    filtering : {"endpoint-independent", "address-dependent", "address-and-port-dependent"}
        Which inbound packets pass to a mapped internal endpoint (RFC 4787 5).
    port_preservation : bool
        Keep the internal port as the external one when it is free (RFC 4787 4.2.1).
    hairpinning : bool
        Loop packets sent to the NAT's own public address back inside (RFC 4787 6).
    mapping_timeout_s : float
        UDP mapping idle timeout in seconds (> 0); RFC 4787 REQ-5 asks for >= 120.
    tcp_timeout_s : float
        TCP mapping idle timeout in seconds (> 0); RFC 5382 REQ-5 asks for >= 7440.
    port_range : (int, int)
        Inclusive range external ports are drawn from (1..65535, low <= high).
    translate : bool
        False makes a plain router (the ``open`` preset): nothing is translated or
        filtered and the other fields are ignored.

    Raises
    ------
    ParameterError
        On an unknown behaviour name or an out-of-range value.

    Examples
    --------
    >>> NatConfig.preset("symmetric").mapping
    'address-and-port-dependent'
    >>> NatConfig.preset("full-cone").with_(hairpinning=False).hairpinning
    False
    """

    mapping: str = "endpoint-independent"
    filtering: str = "address-and-port-dependent"
    port_preservation: bool = True
    hairpinning: bool = True
    mapping_timeout_s: float = 120.0
    tcp_timeout_s: float = 7440.0
    port_range: tuple[int, int] = (1024, 65535)
    translate: bool = True

    def __post_init__(self) -> None:
        put = object.__setattr__
        for name, allowed in (("mapping", MAPPING_BEHAVIOURS), ("filtering", FILTERING_BEHAVIOURS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ParameterError(
                    f"NAT {name} {value!r} is unknown: use one of " + ", ".join(repr(a) for a in allowed)
                )
        for name in ("port_preservation", "hairpinning", "translate"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise ParameterError(f"NAT {name} must be True or False, got {value!r}")
            put(self, name, bool(value))
        for name in ("mapping_timeout_s", "tcp_timeout_s"):
            value = getattr(self, name)
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise ParameterError(f"NAT {name} must be a number of seconds above 0, got {value!r}") from None
            if isinstance(value, bool) or not math.isfinite(v) or v <= 0:
                raise ParameterError(f"NAT {name} must be a number of seconds above 0, got {value!r}")
            put(self, name, v)
        pr = self.port_range
        if (
            not isinstance(pr, (tuple, list))
            or len(pr) != 2
            or any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) for p in pr)
            or not 1 <= pr[0] <= pr[1] <= 65535
        ):
            raise ParameterError(
                f"NAT port_range must be (low, high) integers with 1 <= low <= high <= 65535, got {pr!r}"
            )
        put(self, "port_range", (int(pr[0]), int(pr[1])))

    # --- presets and conversions ----------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> "NatConfig":
        """The named classic NAT type (see the module docstring table).

        Parameters
        ----------
        name : {"open", "full-cone", "restricted-cone", "port-restricted-cone", "symmetric"}

        Raises
        ------
        ParameterError
            If ``name`` is not a preset.
        """
        try:
            return PRESETS[name]
        except (KeyError, TypeError):
            raise ParameterError(
                f"unknown NAT preset {name!r}: use one of " + ", ".join(repr(p) for p in PRESETS)
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict of the fields (``port_range`` as a list), e.g. for JSON/YAML."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["port_range"] = list(d["port_range"])
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NatConfig":
        """Build a config from a mapping; ``{"preset": name, ...}`` starts from a preset.

        Raises
        ------
        ParameterError
            On an unknown key (the message lists the valid ones) or value.
        """
        if not isinstance(data, Mapping):
            raise ParameterError(f"NAT config must be a mapping or a preset name, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in names and k != "preset"]
        if unknown:
            raise ParameterError(
                f"unknown NAT setting(s) {', '.join(map(repr, unknown))}: valid names are preset, " + ", ".join(names)
            )
        kwargs = {k: v for k, v in data.items() if k != "preset"}
        if "port_range" in kwargs and isinstance(kwargs["port_range"], list):
            kwargs["port_range"] = tuple(kwargs["port_range"])
        if "preset" in data:
            return cls.preset(data["preset"]).with_(**kwargs)
        return cls(**kwargs)

    @classmethod
    def coerce(cls, value: "NatConfig | str | Mapping[str, Any]") -> "NatConfig":
        """A :class:`NatConfig` from a config, a preset name or a dict (see :meth:`from_dict`)."""
        if isinstance(value, NatConfig):
            return value
        if isinstance(value, str):
            return cls.preset(value)
        return cls.from_dict(value)

    def with_(self, **changes: Any) -> "NatConfig":
        """A copy with some fields changed, validated again.

        Raises
        ------
        ParameterError
            If a name is not a field or a new value is out of range.
        """
        names = [f.name for f in dataclasses.fields(self)]
        unknown = [k for k in changes if k not in names]
        if unknown:
            raise ParameterError(
                f"unknown NAT setting(s) {', '.join(map(repr, unknown))}: valid names are " + ", ".join(names)
            )
        return dataclasses.replace(self, **changes)

    @property
    def classic_name(self) -> str | None:
        """The classic name whose mapping and filtering this config has, or None.

        ``open`` for a non-translating config; port preservation, hairpinning and
        timeouts are not compared.
        """
        if not self.translate:
            return "open"
        for name, cfg in PRESETS.items():
            if cfg.translate and (cfg.mapping, cfg.filtering) == (self.mapping, self.filtering):
                return name
        return None


_EIM, _ADM, _APDM = MAPPING_BEHAVIOURS

#: Preset name -> :class:`NatConfig` (see the module docstring table).
PRESETS: dict[str, NatConfig] = {
    "open": NatConfig(translate=False),
    "full-cone": NatConfig(mapping=_EIM, filtering="endpoint-independent"),
    "restricted-cone": NatConfig(mapping=_EIM, filtering="address-dependent"),
    "port-restricted-cone": NatConfig(mapping=_EIM, filtering="address-and-port-dependent"),
    "symmetric": NatConfig(
        mapping=_APDM, filtering="address-and-port-dependent", port_preservation=False, hairpinning=False
    ),
}


@dataclass(frozen=True)
class NatVerdict:
    """What the NAT did with one packet.

    Attributes
    ----------
    src, dst : (str, int)
        The packet's addresses after translation (unchanged when dropped).
    dropped : bool
        True when the packet does not get through.
    reason : str or None
        Why it was dropped: ``"no mapping"``, ``"filtered (address-dependent)"``,
        ``"filtered (address-and-port-dependent)"``, ``"hairpinning disabled"``,
        ``"no free port"``; a hairpinned packet dropped on its way back in gets
        ``"hairpin: "`` in front. None when it passed.
    new_mapping : bool
        True when this (outbound) packet created a mapping.
    hairpin : bool
        True when the packet was looped back inside (its ``dst`` is then internal).
    """

    src: Addr
    dst: Addr
    dropped: bool = False
    reason: str | None = None
    new_mapping: bool = False
    hairpin: bool = False


@dataclass
class NatMapping:
    """One active mapping (internal endpoint -> external port).

    Attributes
    ----------
    proto : {"udp", "tcp"}
    internal : (str, int)
        The private endpoint.
    external : (str, int)
        The NAT's public address and the allocated port.
    key : tuple
        What the mapping is keyed by (depends on the mapping behaviour).
    created, last_used : float
        Creation time and last outbound refresh, seconds.
    permissions : dict
        Remote ``(ip, port)`` the internal endpoint sent to -> last time, seconds.
    """

    proto: str
    internal: Addr
    external: Addr
    key: tuple
    created: float
    last_used: float
    permissions: dict[Addr, float] = field(default_factory=dict)


@dataclass
class NatStats:
    """Counters (all start at 0): packets translated each way, dropped, mappings made/expired."""

    outbound: int = 0
    inbound: int = 0
    hairpinned: int = 0
    dropped: int = 0
    mappings_created: int = 0
    mappings_expired: int = 0


def _check_proto(proto: Any) -> str:
    if proto not in PROTOCOLS:
        raise ParameterError(f"NAT protocol must be 'udp' or 'tcp', got {proto!r}")
    return proto


def _check_addr(addr: Any, what: str) -> Addr:
    if (
        not isinstance(addr, (tuple, list))
        or len(addr) < 2
        or not isinstance(addr[0], str)
        or isinstance(addr[1], bool)
        or not isinstance(addr[1], (int, np.integer))
        or not 0 <= addr[1] <= 65535
    ):
        raise ParameterError(f"NAT {what} must be an (IPv4 address, port 0..65535) tuple, got {addr!r}")
    return (addr[0], int(addr[1]))


def _seed_rng(seed: Any) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    if seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0):
        return np.random.default_rng(seed)
    raise ParameterError(f"seed must be None, an integer >= 0, a SeedSequence or a numpy Generator, got {seed!r}")


class Nat:
    """One NAT box: translates packets crossing it and keeps the mapping table.

    Sans-IO: the caller passes ``now`` (seconds); nothing here reads a clock.

    Parameters
    ----------
    config : NatConfig or str or dict
        The behaviour (a preset name is accepted).
    public_ip : str
        The NAT's external IPv4 address.
    seed : None, int, numpy.random.SeedSequence or numpy.random.Generator, optional
        Source of the random port choices (an int gives reproducible ports).
    name : str, optional
        Label for messages and traces.

    Attributes
    ----------
    stats : NatStats

    Examples
    --------
    >>> nat = Nat("symmetric", "198.51.100.10", seed=0)
    >>> a = nat.outbound("udp", ("10.0.0.2", 5000), ("203.0.113.1", 3478), now=0.0).src
    >>> b = nat.outbound("udp", ("10.0.0.2", 5000), ("203.0.113.2", 3478), now=0.0).src
    >>> a != b   # a new mapping per destination
    True
    """

    def __init__(
        self,
        config: NatConfig | str | Mapping[str, Any],
        public_ip: str,
        *,
        seed: Any = None,
        name: str = "nat",
    ) -> None:
        self.config = NatConfig.coerce(config)
        try:
            self.public_ip = str(ipaddress.IPv4Address(public_ip))
        except (ValueError, TypeError):
            raise ParameterError(f"NAT public_ip must be an IPv4 address, got {public_ip!r}") from None
        self.name = str(name)
        self._rng = _seed_rng(seed)
        self._by_key: dict[tuple, NatMapping] = {}
        self._by_port: dict[tuple[str, int], NatMapping] = {}
        self.stats = NatStats()

    # --- public ---------------------------------------------------------------------
    def outbound(self, proto: str, src: Addr, dst: Addr, now: float) -> NatVerdict:
        """Translate a packet going from inside to outside.

        Parameters
        ----------
        proto : {"udp", "tcp"}
        src : (str, int)
            Internal source endpoint.
        dst : (str, int)
            Destination endpoint (the NAT's own public address for a hairpin).
        now : float
            Time in seconds.

        Returns
        -------
        NatVerdict
            ``src`` is the external (mapped) endpoint; dropped only when no port is free,
            or for a hairpin that is disabled or filtered.
        """
        proto, src, dst = _check_proto(proto), _check_addr(src, "source"), _check_addr(dst, "destination")
        if not self.config.translate:
            self.stats.outbound += 1
            return NatVerdict(src, dst)
        self._expire(now)
        key = self._key(proto, src, dst)
        m = self._by_key.get(key)
        created = False
        if m is None:
            port = self._allocate(proto, src[1])
            if port is None:
                self.stats.dropped += 1
                return NatVerdict(src, dst, dropped=True, reason="no free port")
            m = NatMapping(proto, src, (self.public_ip, port), key, now, now)
            self._by_key[key] = m
            self._by_port[(proto, port)] = m
            self.stats.mappings_created += 1
            created = True
        m.last_used = now
        m.permissions[dst] = now
        self.stats.outbound += 1
        if dst[0] == self.public_ip:
            if not self.config.hairpinning:
                self.stats.dropped += 1
                return NatVerdict(src, dst, dropped=True, reason="hairpinning disabled", new_mapping=created)
            back = self._inbound(proto, m.external, dst, now)
            if back.dropped:
                return dataclasses.replace(back, src=src, dst=dst, reason=f"hairpin: {back.reason}", new_mapping=created)
            self.stats.hairpinned += 1
            return NatVerdict(m.external, back.dst, new_mapping=created, hairpin=True)
        return NatVerdict(m.external, dst, new_mapping=created)

    def inbound(self, proto: str, src: Addr, dst: Addr, now: float) -> NatVerdict:
        """Translate a packet arriving from outside at the NAT's public address.

        Parameters
        ----------
        proto : {"udp", "tcp"}
        src : (str, int)
            Remote source endpoint.
        dst : (str, int)
            The NAT's public address and a port.
        now : float
            Time in seconds.

        Returns
        -------
        NatVerdict
            ``dst`` is the internal endpoint, or dropped with ``reason`` ``"no mapping"``
            or ``"filtered (...)"``.
        """
        proto, src, dst = _check_proto(proto), _check_addr(src, "source"), _check_addr(dst, "destination")
        if not self.config.translate:
            self.stats.inbound += 1
            return NatVerdict(src, dst)
        self._expire(now)
        return self._inbound(proto, src, dst, now)

    def mappings(self, now: float | None = None) -> list[NatMapping]:
        """Active mappings (those not expired at ``now`` when given), oldest first."""
        if now is not None:
            self._expire(now)
        return sorted(self._by_key.values(), key=lambda m: (m.created, m.external[1]))

    def __repr__(self) -> str:
        kind = self.config.classic_name or f"{self.config.mapping} mapping / {self.config.filtering} filtering"
        return f"Nat({self.name!r}, {kind}, public_ip={self.public_ip!r}, mappings={len(self._by_key)})"

    # --- internals ------------------------------------------------------------------
    def _inbound(self, proto: str, src: Addr, dst: Addr, now: float) -> NatVerdict:
        m = self._by_port.get((proto, dst[1])) if dst[0] == self.public_ip else None
        if m is None:
            self.stats.dropped += 1
            return NatVerdict(src, dst, dropped=True, reason="no mapping")
        filtering = self.config.filtering
        timeout = self._timeout(proto)
        if filtering == "address-dependent":
            ok = any(r[0] == src[0] and now - t <= timeout for r, t in m.permissions.items())
        elif filtering == "address-and-port-dependent":
            t = m.permissions.get(src)
            ok = t is not None and now - t <= timeout
        else:
            ok = True
        if not ok:
            self.stats.dropped += 1
            return NatVerdict(src, dst, dropped=True, reason=f"filtered ({filtering})")
        self.stats.inbound += 1
        return NatVerdict(src, m.internal)

    def _timeout(self, proto: str) -> float:
        return self.config.tcp_timeout_s if proto == "tcp" else self.config.mapping_timeout_s

    def _key(self, proto: str, src: Addr, dst: Addr) -> tuple:
        mapping = self.config.mapping
        if mapping == "endpoint-independent":
            return (proto, src)
        if mapping == "address-dependent":
            return (proto, src, dst[0])
        return (proto, src, dst)

    def _expire(self, now: float) -> None:
        dead = [k for k, m in self._by_key.items() if now - m.last_used > self._timeout(m.proto)]
        for k in dead:
            m = self._by_key.pop(k)
            self._by_port.pop((m.proto, m.external[1]), None)
            self.stats.mappings_expired += 1

    def _allocate(self, proto: str, internal_port: int) -> int | None:
        if self.config.port_preservation and internal_port > 0 and (proto, internal_port) not in self._by_port:
            return internal_port
        lo, hi = self.config.port_range
        for _ in range(64):
            p = int(self._rng.integers(lo, hi + 1))
            if (proto, p) not in self._by_port:
                return p
        start = int(self._rng.integers(lo, hi + 1))
        span = hi - lo + 1
        for i in range(span):
            p = lo + (start - lo + i) % span
            if (proto, p) not in self._by_port:
                return p
        return None
