"""Named network paths: starting points for experiments.

All values are one-way, per direction, and **illustrative**: they are typical orders of
magnitude taken from commonly published and measured figures, not a measurement of any
particular network. Real paths vary by a factor of several; sweep around a preset rather
than quote it as "the" LTE or Wi-Fi number.

=============  ========  ==========  ================  ===============  ========  =====
name           delay_ms  jitter_ms   loss              bandwidth        queue     notes
=============  ========  ==========  ================  ===============  ========  =====
``perfect``    0         0           0                 unlimited        -         reference: no impairment at all
``lan``        1         0.2         0                 unlimited        -         switched Ethernet
``wifi``       5         5           0.5 %, burst 2    unlimited        -         home 802.11
``lte``        35        10          1 %, burst 1.5    unlimited        -         4G mobile
``3g``         80        25          2 %, burst 2      384 kbit/s       -         UMTS Release 99 bearer
``satellite``  300       10          0.5 % random      unlimited        -         geostationary hop
``congested``  40        30 pareto   3 %, burst 3      1000 kbit/s      50 pkts   shared bottleneck
=============  ========  ==========  ================  ===============  ========  =====

Where the numbers come from
---------------------------
``lan``
    Switched Ethernet has round trips well under a millisecond; 1 ms one-way leaves room
    for host network stacks; jitter is a fraction of that; loss is negligible.
``wifi``
    802.11 channel contention and MAC-layer retransmissions add a few milliseconds of
    variable delay; retries hide most radio loss, and what is left comes in short bursts
    during interference. Commonly reported: a few ms delay and jitter, residual loss
    below 1 %.
``lte``
    Measurement campaigns and crowd-sourced reports commonly give LTE round trips to
    nearby servers of roughly 40-80 ms (one-way about half); HARQ/RLC retransmissions keep
    residual loss around 1 % and cause jitter of the order of 10 ms.
``3g``
    384 kbit/s is the peak rate of the UMTS Release 99 dedicated-channel bearer;
    round trips of 150-200 ms and more jitter and loss than LTE are typical of
    UMTS/HSPA measurements.
``satellite``
    A geostationary satellite orbits at 35,786 km: ground -> satellite -> ground is at
    least 2 x 35,786 km / c ~ 239 ms and about 270 ms for usual slant ranges; 30 ms more
    for terrestrial tails and processing gives 300 ms, already near ITU-T G.114's
    400 ms planning limit for one-way delay.
``congested``
    A bottleneck shared with bulk traffic: queueing delay is heavy-tailed (Pareto
    jitter), a drop-tail queue of 50 packets at 1 Mbit/s drops when full, and loss comes in
    bursts of several packets.

Use :func:`preset` to get one (a :class:`~voicelab.net.ChannelConfig`, change fields
with ``.with_(...)``) and :func:`describe_presets` for this table as rows.
"""

from __future__ import annotations

from typing import Any

from ..errors import ParameterError
from .channel import ChannelConfig

__all__ = ["PRESETS", "preset", "describe_presets"]

#: Preset name -> :class:`~voicelab.net.ChannelConfig` (see the module docstring).
PRESETS: dict[str, ChannelConfig] = {
    "perfect": ChannelConfig(),
    "lan": ChannelConfig(delay_ms=1.0, jitter_ms=0.2),
    "wifi": ChannelConfig(delay_ms=5.0, jitter_ms=5.0, loss_rate=0.005, burst_length=2.0),
    "lte": ChannelConfig(delay_ms=35.0, jitter_ms=10.0, loss_rate=0.01, burst_length=1.5),
    "3g": ChannelConfig(
        delay_ms=80.0, jitter_ms=25.0, loss_rate=0.02, burst_length=2.0, bandwidth_kbps=384.0
    ),
    "satellite": ChannelConfig(delay_ms=300.0, jitter_ms=10.0, loss_rate=0.005),
    "congested": ChannelConfig(
        delay_ms=40.0,
        jitter_ms=30.0,
        jitter_distribution="pareto",
        loss_rate=0.03,
        burst_length=3.0,
        bandwidth_kbps=1000.0,
        queue_packets=50,
    ),
}

_NOTES: dict[str, tuple[str, str]] = {
    "perfect": ("no impairment at all", "reference point"),
    "lan": ("switched Ethernet", "sub-millisecond LAN round trips; loss negligible"),
    "wifi": (
        "home 802.11",
        "contention and MAC retransmissions: a few ms of delay and jitter, residual loss "
        "below 1 % in short bursts",
    ),
    "lte": (
        "4G mobile",
        "commonly reported LTE round trips of ~40-80 ms (one-way about half); HARQ keeps "
        "residual loss near 1 %",
    ),
    "3g": (
        "UMTS / HSPA",
        "384 kbit/s is the UMTS Release 99 bearer peak; round trips of 150-200 ms are typical",
    ),
    "satellite": (
        "geostationary hop",
        "2 x 35,786 km / c ~ 239-270 ms ground-satellite-ground plus ~30 ms terrestrial "
        "and processing",
    ),
    "congested": (
        "shared bottleneck",
        "heavy-tailed queueing delay, 50-packet drop-tail queue at 1 Mbit/s, bursty loss",
    ),
}


def preset(name: str) -> ChannelConfig:
    """The :class:`~voicelab.net.ChannelConfig` of a named network path.

    Parameters
    ----------
    name : str
        One of ``perfect, lan, wifi, lte, 3g, satellite, congested`` (case-insensitive).

    Returns
    -------
    ChannelConfig
        Frozen; derive variants with ``.with_(...)``.

    Raises
    ------
    ParameterError
        If the name is unknown (the message lists the known names).

    Examples
    --------
    >>> preset("lte").delay_ms
    35.0
    >>> preset("lte").with_(loss_rate=0.05).loss_rate
    0.05
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in PRESETS:
        raise ParameterError(
            f"unknown network preset {name!r}: use one of {', '.join(PRESETS)}"
        )
    return PRESETS[key]


def describe_presets() -> list[dict[str, Any]]:
    """The presets as a table: one dict per preset.

    Returns
    -------
    list of dict
        Keys: ``name``, ``description``, ``source`` (where the numbers come from; all
        values are illustrative), every :class:`~voicelab.net.ChannelConfig` field, and
        ``expected_loss_rate``. Ready for ``pandas.DataFrame(describe_presets())``.
    """
    rows = []
    for name, cfg in PRESETS.items():
        description, source = _NOTES[name]
        row: dict[str, Any] = {"name": name, "description": description, "source": source}
        row.update(cfg.to_dict())
        row["expected_loss_rate"] = cfg.expected_loss_rate
        rows.append(row)
    return rows
