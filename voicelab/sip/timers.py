"""SIP transaction timers (RFC 3261 17 and table 4 of appendix A; RFC 6026 Timers L, M).

Three base values, everything else derived from them::

    T1 = 0.5 s   RTT estimate
    T2 = 4 s     longest retransmit interval for non-INVITE requests and INVITE responses
    T4 = 5 s     longest time a message stays in the network

    timer  value (unreliable / reliable)      section     meaning
    A      T1, doubling       / not used      17.1.1.2    INVITE request retransmit
    B      64*T1              / 64*T1         17.1.1.2    INVITE client transaction timeout
    D      max(32 s, 64*T1)   / 0             17.1.1.2    wait for response retransmits
    E      T1, doubling to T2 / not used      17.1.2.2    non-INVITE request retransmit
           (T2 once in Proceeding)
    F      64*T1              / 64*T1         17.1.2.2    non-INVITE client transaction timeout
    G      T1, doubling to T2 / not used      17.2.1      INVITE response retransmit
    H      64*T1              / 64*T1         17.2.1      wait for ACK
    I      T4                 / 0             17.2.1      wait for ACK retransmits
    J      64*T1              / 0             17.2.2      wait for non-INVITE request retransmits
    K      T4                 / 0             17.1.2.2    wait for response retransmits
    L      64*T1              / 64*T1         RFC 6026    INVITE server: wait for INVITE
                                                          retransmits after a 2xx (Accepted)
    M      64*T1              / 64*T1         RFC 6026    INVITE client: wait for 2xx
                                                          retransmits / forks (Accepted)

RFC 3261 asks for Timer D to be "at least 32 seconds" on unreliable transports; with the
default T1 that equals 64*T1, and with a larger T1 we keep D >= 64*T1 so that the client
outlives the server's Timer G/H retransmissions of the same final response.

Retransmission timers (A, E, G) exist only on unreliable transports; on reliable ones
(TCP, TLS, SCTP, WebSocket) they are ``None`` and the "wait for stragglers" timers
D, I, J, K are 0, which ends the transaction in the same step.

All values are in seconds. Nothing here reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import ParameterError

__all__ = ["TimerConfig", "TimerValues", "TIMER_NAMES", "TIMER_DESCRIPTIONS", "derive_timers"]

#: The RFC timers in alphabetical order (C, the proxy INVITE timer, is not a
#: transaction timer and is left out).
TIMER_NAMES = ("A", "B", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M")

#: One line per timer: where it is defined and what it does.
TIMER_DESCRIPTIONS = {
    "A": "RFC 3261 17.1.1.2: INVITE request retransmit interval, unreliable transports only",
    "B": "RFC 3261 17.1.1.2: INVITE client transaction timeout (64*T1)",
    "D": "RFC 3261 17.1.1.2: INVITE client waits for final-response retransmits (>= 32 s; 0 on reliable)",
    "E": "RFC 3261 17.1.2.2: non-INVITE request retransmit interval (doubling to T2), unreliable only",
    "F": "RFC 3261 17.1.2.2: non-INVITE client transaction timeout (64*T1)",
    "G": "RFC 3261 17.2.1: INVITE final-response retransmit interval (doubling to T2), unreliable only",
    "H": "RFC 3261 17.2.1: INVITE server waits for ACK (64*T1)",
    "I": "RFC 3261 17.2.1: INVITE server absorbs ACK retransmits (T4; 0 on reliable)",
    "J": "RFC 3261 17.2.2: non-INVITE server absorbs request retransmits (64*T1; 0 on reliable)",
    "K": "RFC 3261 17.1.2.2: non-INVITE client absorbs response retransmits (T4; 0 on reliable)",
    "L": "RFC 6026 7.1: INVITE server absorbs INVITE retransmits after a 2xx (64*T1)",
    "M": "RFC 6026 7.2: INVITE client passes 2xx retransmits and forks to the TU (64*T1)",
}


def _seconds(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise ParameterError(f"{name} must be a duration in seconds above 0, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a duration in seconds above 0, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ParameterError(f"{name} must be a finite duration in seconds above 0, got {value!r}")
    return v


@dataclass(frozen=True)
class TimerConfig:
    """The three base values of RFC 3261 timers, in seconds.

    Parameters
    ----------
    t1 : float
        RTT estimate (s), default 0.5. RFC 3261 allows a larger value on high-latency
        links and a smaller one only on networks known to have a lower RTT.
    t2 : float
        Longest retransmit interval for non-INVITE requests and INVITE responses (s),
        default 4. Must be >= ``t1``.
    t4 : float
        Longest time a message stays in the network (s), default 5.

    Raises
    ------
    ParameterError
        If a value is not a finite number above 0, or ``t2 < t1``.

    Examples
    --------
    >>> TimerConfig().values(reliable=False).b
    32.0
    >>> TimerConfig(t1=0.25).values(reliable=True).a is None
    True
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "t1", _seconds(self.t1, "t1"))
        object.__setattr__(self, "t2", _seconds(self.t2, "t2"))
        object.__setattr__(self, "t4", _seconds(self.t4, "t4"))
        if self.t2 < self.t1:
            raise ParameterError(f"t2 ({self.t2:g} s) must not be below t1 ({self.t1:g} s)")

    def values(self, *, reliable: bool) -> "TimerValues":
        """The initial value of every timer for one kind of transport.

        Parameters
        ----------
        reliable : bool
            True for TCP/TLS/SCTP/WebSocket, False for UDP.

        Returns
        -------
        TimerValues
        """
        return derive_timers(self, reliable=reliable)


@dataclass(frozen=True)
class TimerValues:
    """Initial timer durations (s) for one transport kind; ``None`` = timer not used.

    Build with :meth:`TimerConfig.values` or :func:`derive_timers`. Field names are the
    RFC letters in lower case; ``t1``, ``t2``, ``t4`` and ``reliable`` are kept for the
    back-off rules in :meth:`backoff`.
    """

    reliable: bool
    t1: float
    t2: float
    t4: float
    a: float | None
    b: float
    d: float
    e: float | None
    f: float
    g: float | None
    h: float
    i: float
    j: float
    k: float
    l: float  # noqa: E741 - the RFC's name
    m: float

    def initial(self, name: str) -> float | None:
        """Initial duration of timer ``name`` (``"A"`` .. ``"M"``), None if unused.

        Raises
        ------
        ParameterError
            For a name that is not one of :data:`TIMER_NAMES`.
        """
        if name not in TIMER_NAMES:
            raise ParameterError(f"unknown timer {name!r}: use one of {', '.join(TIMER_NAMES)}")
        return getattr(self, name.lower())

    def backoff(self, name: str, previous: float) -> float:
        """The next interval of a retransmission timer after one that lasted ``previous`` s.

        Timer A doubles without limit (17.1.1.2); Timers E and G double up to T2
        (17.1.2.2, 17.2.1).

        Raises
        ------
        ParameterError
            For a timer that does not back off.
        """
        if name == "A":
            return 2.0 * previous
        if name in ("E", "G"):
            return min(2.0 * previous, self.t2)
        raise ParameterError(f"timer {name!r} is not a retransmission timer; only A, E and G back off")


def derive_timers(config: TimerConfig | None = None, *, reliable: bool) -> TimerValues:
    """Derive Timers A..M from T1, T2, T4 (see the module table).

    Parameters
    ----------
    config : TimerConfig, optional
        Base values; the RFC defaults when None.
    reliable : bool
        True for a reliable transport: no retransmission timers, D/I/J/K zero.

    Returns
    -------
    TimerValues

    Raises
    ------
    ParameterError
        If ``config`` is not a TimerConfig or ``reliable`` is not a bool.
    """
    if config is None:
        config = _DEFAULT_CONFIG
    if not isinstance(config, TimerConfig):
        raise ParameterError(f"timers must be a TimerConfig, got {type(config).__name__}")
    if not isinstance(reliable, bool):
        raise ParameterError(f"reliable must be True or False, got {reliable!r}")
    key = (config, reliable)
    values = _DERIVED.get(key)  # one per configuration: every transaction asks (frozen, shared)
    if values is None:
        values = _derive(config, reliable)
        if len(_DERIVED) < 64:
            _DERIVED[key] = values
    return values


_DERIVED: dict[tuple[TimerConfig, bool], TimerValues] = {}


def _derive(config: TimerConfig, reliable: bool) -> TimerValues:
    t1, t2, t4 = config.t1, config.t2, config.t4
    long = 64.0 * t1
    return TimerValues(
        reliable=reliable,
        t1=t1,
        t2=t2,
        t4=t4,
        a=None if reliable else t1,
        b=long,
        d=0.0 if reliable else max(32.0, long),
        e=None if reliable else t1,
        f=long,
        g=None if reliable else t1,
        h=long,
        i=0.0 if reliable else t4,
        j=0.0 if reliable else long,
        k=0.0 if reliable else t4,
        l=long,
        m=long,
    )


_DEFAULT_CONFIG = TimerConfig()
