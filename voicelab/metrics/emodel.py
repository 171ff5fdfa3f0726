"""The ITU-T G.107 E-model (and its wideband version G.107.1) as used in VoIP planning.

The E-model rates a connection on the transmission rating scale R (0..100 narrowband,
0..129 wideband) from a few planning inputs and maps R to an estimated conversational
MOS (``MOS_CQE``)::

    R = Ro - Is - Id - Ie,eff + A

with, as used in practice for VoIP (echo-free terminals, default loudness and noise):

* ``Ro - Is = 93.2`` (G.107 default values), ``A = 0``.
* ``Id``: the delay impairment from the one-way mouth-to-ear delay ``Ta`` (ms). Two
  forms are offered:

  - ``delay_model="simplified"`` (default): Cole and Rosenbluth's fit,
    ``Id = 0.024 Ta + 0.11 (Ta - 177.3) H(Ta - 177.3)`` (R. G. Cole, J. H. Rosenbluth,
    "Voice over IP performance monitoring", ACM SIGCOMM CCR 31(2), 2001). It reproduces
    the usual planning check values (150 ms -> MOS 4.33, 400 ms -> 3.05).
  - ``delay_model="g107"``: the full G.107 (06/2015) computation with every other input
    at its G.107 default (Table 3 of the Recommendation: SLR 8, RLR 2, STMR 15, LSTR 18,
    Ds 3, TELR 65, WEPL 110, qdu 1, Nc -70, Nfor -64, Ps = Pr = 35): ``Ro`` and ``Is``
    (Iolr, Ist, Iq) are computed, and ``Id = Idte + Idle + Idd`` with ``T = Ta`` (talker
    echo path) and ``Tr = 2 Ta`` (listener echo round trip). ``Idd`` is the pure-delay
    term, eq. (7-27..7-29): ``0`` for ``Ta <= mT`` (100 ms), else
    ``25 {(1 + X^6)^(1/6) - 3 (1 + (X/3)^6)^(1/6) + 2}`` with ``X = log2(Ta / mT)``.
    With every default and ``Ta = 0`` this gives R = 93.2, the Recommendation's own
    check value.

* ``Ie,eff = Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl)`` with ``Ppl`` the packet loss in
  percent, ``Bpl`` the codec's packet-loss robustness and ``BurstR`` the burst ratio
  (1 for random loss; see :func:`burst_ratio`).
* ``MOS_CQE = 1`` for R < 0, ``4.5`` for R > 100, else
  ``1 + 0.035 R + 7e-6 R (R - 60)(100 - R)`` (G.107 Annex B). The polynomial dips a
  hair below 1 for 0 < R < 6.5; it is clamped to 1 there, which keeps it monotonic.

Wideband (G.107.1): ``R = 129 - Id - Ie,eff,WB`` (``Ro,WB = 129``, ``Is,WB = 0``), the
same constant 95 in ``Ie,eff``, and ``MOS`` from ``R / 1.29`` through the narrowband
polynomial (G.107.1 Annex A). voicelab uses the narrowband delay impairment unchanged on
the wideband scale (``delay_model="g107"`` uses only ``Idd``: the wideband talker-echo
terms are not modelled; endpoints are assumed echo-free).

Codec impairments come from the table :data:`CODEC_IMPAIRMENTS` (ITU-T G.113
Appendix I for narrowband, Appendix IV for wideband; estimates where G.113 has no
value, each flagged with ``status="estimate"`` and a note on how it was derived).

Why our own code: no maintained Python package implements G.107/G.107.1 with the
G.113 tables; the model is a handful of closed-form equations.

Examples
--------
>>> round(mos_from_r(93.2), 2)
4.41
>>> res = r_factor(delay_ms=0.0, loss_rate=0.02, codec="pcmu")
>>> round(res.mos_cqe, 2)
4.23
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ParameterError

__all__ = [
    "EModelResult",
    "CodecImpairment",
    "CODEC_IMPAIRMENTS",
    "DEFAULT_BITRATES",
    "RO_MINUS_IS",
    "RO_WB",
    "r_factor",
    "mos_from_r",
    "r_from_mos",
    "burst_ratio",
    "ie_bpl",
    "delay_impairment",
    "effective_equipment_impairment",
    "known_codecs",
]

#: Default ``Ro - Is`` of the narrowband E-model (G.107 defaults, echo-free).
RO_MINUS_IS = 93.2
#: ``Ro,WB`` of the wideband E-model (G.107.1); ``Is,WB = 0``.
RO_WB = 129.0
#: G.107.1 Annex A: wideband R is divided by this before the MOS polynomial.
WB_SCALE = 1.29

# ----------------------------------------------------------------------------- table

_G113_I = "ITU-T G.113 (11/2007) Appendix I"
_G113_IV = "ITU-T G.113 Appendix IV (Table IV.1 monotic Ie,WB)"


@dataclass(frozen=True)
class CodecImpairment:
    """One row of the codec impairment table.

    Attributes
    ----------
    codec : str
        Codec registry name (``"pcmu"``, ``"g729"``, ...).
    bitrate : int or None
        Codec bit rate in bit/s, None where the codec has one rate.
    wideband : bool
        True for an ``Ie,WB`` on the G.107.1 scale, False for a G.107 ``Ie``.
    plc : bool or None
        True/False where the row depends on packet-loss concealment, None if not.
    ie : float
        Equipment impairment factor (``Ie`` or ``Ie,WB``).
    bpl : float
        Packet-loss robustness factor.
    ie_status, bpl_status : str
        ``"g113"`` (value published in G.113), ``"g113-secondary"`` (G.113 value as
        transcribed by secondary sources, not checked against the Recommendation text
        here) or ``"estimate"``.
    note : str
        Where the numbers come from.
    """

    codec: str
    bitrate: int | None
    wideband: bool
    plc: bool | None
    ie: float
    bpl: float
    ie_status: str
    bpl_status: str
    note: str

    @property
    def source(self) -> str:
        """One-line provenance: status of Ie and Bpl plus the note."""
        return f"Ie: {self.ie_status}; Bpl: {self.bpl_status}; {self.note}"

    @property
    def estimated(self) -> bool:
        """True when Ie or Bpl is not a published G.113 value."""
        return "estimate" in (self.ie_status, self.bpl_status)


_G711_PLC_NOTE = (
    f"{_G113_I} Table I.3: G.711 with the G.711 Appendix I PLC, random loss: Ie 0, Bpl 25.1"
)
_G711_NOPLC_NOTE = f"{_G113_I} Table I.3: G.711 without PLC, random loss: Ie 0, Bpl 4.3"
_G726_NOTE = (
    f"Ie from {_G113_I} Table I.1 (G.726 ADPCM: 40k 2, 32k 7, 24k 25, 16k 50); G.113 "
    "gives no Bpl for G.726: Bpl estimated as G.711's (a sample-based codec concealed "
    "on the decoded PCM like G.711)"
)
_AMRWB_NOTE = (
    f"Ie,WB from {_G113_IV}; Bpl: G.113 Table IV.4 gives Bpl only for 12.65k (4.3), "
    "23.05k (4.6) and 23.85k (4.9), diotic listening; other modes estimated as 4.3"
)
_OPUS_NOTE = (
    "Opus is not in G.113. Ie,WB estimated P.834.1-style from voicelab's clean-channel "
    "PESQ-WB (REFERENCE-FACTS: 8/12/16/24/32/64 kbit/s -> 2.64/3.83/4.11/4.39/4.39/4.49), "
    "anchored at G.722 64k (PESQ-WB 4.28, Ie,WB 13): Ie,WB = 13 + 1.29 (R(4.28) - R(pesq)) "
    "with R from the G.107 Annex B inverse, clamped at 0. Bpl estimated as G.711-with-PLC's "
    "25.1 (Opus has PLC; no published value); measure with the simulator to replace"
)

#: The codec impairment table (data, with provenance on every row).
CODEC_IMPAIRMENTS: tuple[CodecImpairment, ...] = (
    # ---------------------------------------------------------------- narrowband (G.107)
    CodecImpairment("pcmu", None, False, True, 0.0, 25.1, "g113", "g113", _G711_PLC_NOTE),
    CodecImpairment("pcmu", None, False, False, 0.0, 4.3, "g113", "g113", _G711_NOPLC_NOTE),
    CodecImpairment("pcma", None, False, True, 0.0, 25.1, "g113", "g113", _G711_PLC_NOTE),
    CodecImpairment("pcma", None, False, False, 0.0, 4.3, "g113", "g113", _G711_NOPLC_NOTE),
    CodecImpairment(
        "l16", None, False, True, 0.0, 25.1, "g113", "estimate",
        "linear PCM: Ie 0 (no coding distortion, the E-model reference); Bpl taken from "
        "G.711 with Appendix I PLC (same sample-based concealment)",
    ),
    CodecImpairment(
        "l16", None, False, False, 0.0, 4.3, "g113", "estimate",
        "linear PCM: Ie 0; Bpl taken from G.711 without PLC",
    ),
    CodecImpairment(
        "g729", 8000, False, None, 11.0, 19.0, "g113", "g113",
        f"{_G113_I} Table I.3: G.729A + VAD, random loss: Ie 11, Bpl 19.0 "
        "(Table I.1 gives Ie 10 for G.729 without VAD)",
    ),
    CodecImpairment(
        "g723", 6300, False, None, 15.0, 16.1, "g113", "g113",
        f"{_G113_I} Table I.3: G.723.1 6.3 kbit/s + VAD, random loss: Ie 15, Bpl 16.1",
    ),
    CodecImpairment(
        "g723", 5300, False, None, 19.0, 16.1, "g113", "estimate",
        f"Ie from {_G113_I} Table I.1 (G.723.1 ACELP 5.3 kbit/s: 19); Bpl assumed equal "
        "to the 6.3 kbit/s mode's 16.1",
    ),
    CodecImpairment("g726", 40000, False, True, 2.0, 25.1, "g113", "estimate", _G726_NOTE),
    CodecImpairment("g726", 32000, False, True, 7.0, 25.1, "g113", "estimate", _G726_NOTE),
    CodecImpairment("g726", 24000, False, True, 25.0, 25.1, "g113", "estimate", _G726_NOTE),
    CodecImpairment("g726", 16000, False, True, 50.0, 25.1, "g113", "estimate", _G726_NOTE),
    CodecImpairment("g726", 40000, False, False, 2.0, 4.3, "g113", "estimate", _G726_NOTE),
    CodecImpairment("g726", 32000, False, False, 7.0, 4.3, "g113", "estimate", _G726_NOTE),
    CodecImpairment("g726", 24000, False, False, 25.0, 4.3, "g113", "estimate", _G726_NOTE),
    CodecImpairment("g726", 16000, False, False, 50.0, 4.3, "g113", "estimate", _G726_NOTE),
    CodecImpairment(
        "gsm", 13000, False, None, 20.0, 10.0, "g113", "estimate",
        f"Ie from {_G113_I} Table I.1 (GSM 06.10 full rate: 20); Bpl assumed equal to "
        "GSM-EFR's 10 (Table I.3; same 20 ms frames, substitution/muting concealment)",
    ),
    CodecImpairment(
        "amr-nb", 12200, False, None, 5.0, 10.0, "g113", "g113-secondary",
        f"AMR-NB 12.2 is the GSM-EFR algorithm: {_G113_I} Table I.1 GSM-EFR Ie 5 and "
        "Table I.3 GSM-EFR Bpl 10 (G.113 has no AMR-NB row)",
    ),
    CodecImpairment(
        "amr-nb", 7400, False, None, 10.0, 10.0, "g113", "estimate",
        f"AMR-NB 7.4 is the TIA IS-641 algorithm: {_G113_I} Table I.1 IS-641 Ie 10; "
        "Bpl assumed equal to GSM-EFR's 10",
    ),
    CodecImpairment(
        "amr-nb", 4750, False, None, 24.0, 10.0, "estimate", "estimate",
        "not in G.113: Ie = 5 (AMR 12.2) + P.834-style difference of voicelab's "
        "clean-channel PESQ-NB 4.11 (12.2k) vs 3.25 (4.75k) on the R scale (19.4); "
        "Bpl assumed equal to GSM-EFR's 10",
    ),
    # ---------------------------------------------------------------- wideband (G.107.1)
    CodecImpairment(
        "g722", 64000, True, None, 13.0, 25.1, "g113-secondary", "estimate",
        "Ie,WB 13 for G.722 64 kbit/s as cited from G.113 Appendix IV (not checked "
        "against the Recommendation text here); Bpl: no value found, assumed equal to "
        "G.711-with-PLC's 25.1 (G.722 Appendix III/IV PLC)",
    ),
    CodecImpairment("amr-wb", 6600, True, None, 41.0, 4.3, "g113", "estimate", _AMRWB_NOTE),
    CodecImpairment("amr-wb", 8850, True, None, 26.0, 4.3, "g113", "estimate", _AMRWB_NOTE),
    CodecImpairment("amr-wb", 12650, True, None, 13.0, 4.3, "g113", "g113-secondary", _AMRWB_NOTE),
    CodecImpairment("amr-wb", 14250, True, None, 10.0, 4.3, "g113-secondary", "estimate", _AMRWB_NOTE),
    CodecImpairment("amr-wb", 15850, True, None, 7.0, 4.3, "g113-secondary", "estimate", _AMRWB_NOTE),
    CodecImpairment("amr-wb", 18250, True, None, 5.0, 4.3, "g113-secondary", "estimate", _AMRWB_NOTE),
    CodecImpairment("amr-wb", 19850, True, None, 3.0, 4.3, "g113-secondary", "estimate", _AMRWB_NOTE),
    CodecImpairment("amr-wb", 23050, True, None, 1.0, 4.6, "g113-secondary", "g113-secondary", _AMRWB_NOTE),
    CodecImpairment("amr-wb", 23850, True, None, 8.0, 4.9, "g113", "g113-secondary", _AMRWB_NOTE),
    CodecImpairment("opus", 8000, True, None, 60.0, 25.1, "estimate", "estimate", _OPUS_NOTE),
    CodecImpairment("opus", 12000, True, None, 29.0, 25.1, "estimate", "estimate", _OPUS_NOTE),
    CodecImpairment("opus", 16000, True, None, 20.0, 25.1, "estimate", "estimate", _OPUS_NOTE),
    CodecImpairment("opus", 24000, True, None, 7.0, 25.1, "estimate", "estimate", _OPUS_NOTE),
    CodecImpairment("opus", 32000, True, None, 7.0, 25.1, "estimate", "estimate", _OPUS_NOTE),
    CodecImpairment("opus", 64000, True, None, 0.0, 25.1, "estimate", "estimate", _OPUS_NOTE),
    CodecImpairment(
        "l16", None, True, None, 0.0, 25.1, "g113", "estimate",
        "wideband linear PCM: Ie,WB 0 (the G.107.1 reference); Bpl as G.711 with PLC",
    ),
    CodecImpairment(
        "pcmu", None, True, True, 36.0, 25.1, "estimate", "g113",
        "narrowband G.711 on the wideband scale: Ie,WB 36 (129 - 93.2 = 35.8, the value "
        "usually quoted from G.113 Appendix IV; voicelab's PESQ-WB gives ~38.5); Bpl as NB",
    ),
    CodecImpairment(
        "pcma", None, True, True, 36.0, 25.1, "estimate", "g113",
        "narrowband G.711 on the wideband scale: Ie,WB 36 (see pcmu); Bpl as NB",
    ),
    CodecImpairment(
        "pcmu", None, True, False, 36.0, 4.3, "estimate", "g113",
        "narrowband G.711 without PLC on the wideband scale: Ie,WB 36; Bpl 4.3",
    ),
    CodecImpairment(
        "pcma", None, True, False, 36.0, 4.3, "estimate", "g113",
        "narrowband G.711 without PLC on the wideband scale: Ie,WB 36; Bpl 4.3",
    ),
)

#: Bit rate (bit/s) assumed when a multi-rate codec is named without one.
DEFAULT_BITRATES: Mapping[str, int] = {
    "g726": 32000,
    "g723": 6300,
    "g729": 8000,
    "gsm": 13000,
    "g722": 64000,
    "amr-nb": 12200,
    "amr-wb": 12650,
    "opus": 24000,
}

_ALIASES = {
    "g711": "pcmu",
    "g711u": "pcmu",
    "g711a": "pcma",
    "pcm": "l16",
    "g729a": "g729",
    "amr": "amr-nb",
    "amrnb": "amr-nb",
    "amrwb": "amr-wb",
    "g722.2": "amr-wb",
    "gsm-fr": "gsm",
}


def known_codecs() -> list[str]:
    """Codec names with an entry in :data:`CODEC_IMPAIRMENTS`, sorted."""
    return sorted({row.codec for row in CODEC_IMPAIRMENTS})


def _normalize_codec(codec: Any) -> str:
    if not isinstance(codec, str) or not codec.strip():
        raise ParameterError(
            f"codec must be a codec name such as 'pcmu', got {codec!r}; known: "
            f"{', '.join(known_codecs())}"
        )
    name = codec.strip().lower()
    return _ALIASES.get(name, name)


def ie_bpl(
    codec: str,
    *,
    bitrate: int | None = None,
    plc: bool = True,
    wideband: bool = False,
) -> tuple[float, float, str]:
    """Look up a codec's equipment impairment ``Ie`` and robustness ``Bpl``.

    Parameters
    ----------
    codec : str
        Codec registry name (see :func:`known_codecs`).
    bitrate : int, optional
        Bit rate in bit/s for multi-rate codecs (G.726, G.723.1, AMR, Opus). Default:
        :data:`DEFAULT_BITRATES`. Opus rates between table points are interpolated
        linearly in log2(bitrate) (and flagged as estimates, like every Opus row).
    plc : bool
        Whether the receiver conceals lost packets (matters for G.711, G.726, L16).
    wideband : bool
        Look up ``Ie,WB`` on the G.107.1 scale instead of the narrowband ``Ie``.

    Returns
    -------
    ie : float
    bpl : float
    source : str
        Provenance: ``"Ie: g113; Bpl: estimate; <note>"``. The word ``estimate``
        appears whenever one of the two values is not published in G.113.

    Raises
    ------
    ParameterError
        Unknown codec, bit rate without an entry, or a codec that has no value on the
        requested scale (e.g. G.722 on the narrowband scale).
    """
    row = _lookup(codec, bitrate=bitrate, plc=plc, wideband=wideband)
    return row.ie, row.bpl, row.source


def _lookup(codec: str, *, bitrate: int | None, plc: bool, wideband: bool) -> CodecImpairment:
    name = _normalize_codec(codec)
    rows = [r for r in CODEC_IMPAIRMENTS if r.codec == name]
    if not rows:
        raise ParameterError(
            f"no E-model impairment values for codec {codec!r}; known codecs: "
            f"{', '.join(known_codecs())}; or pass ie= and bpl= explicitly"
        )
    scale = "wideband (G.107.1)" if wideband else "narrowband (G.107)"
    rows = [r for r in rows if r.wideband == bool(wideband)]
    if not rows:
        other = "wideband=False" if wideband else "wideband=True"
        raise ParameterError(
            f"codec {name!r} has no {scale} impairment value; use {other} or pass ie= and bpl="
        )
    rows = [r for r in rows if r.plc is None or r.plc == bool(plc)]
    rates = sorted({r.bitrate for r in rows if r.bitrate is not None})
    if not rates:
        return rows[0]
    if bitrate is None:
        bitrate = DEFAULT_BITRATES.get(name, rates[-1])
    try:
        bitrate_f = float(bitrate)
    except (TypeError, ValueError):
        raise ParameterError(f"bitrate must be a number in bit/s, got {bitrate!r}") from None
    for r in rows:
        if r.bitrate is not None and abs(r.bitrate - bitrate_f) < 0.5:
            return r
    if name == "opus" and rates[0] <= bitrate_f <= rates[-1]:
        return _interpolate(rows, bitrate_f)
    raise ParameterError(
        f"no {scale} impairment value for {name} at {bitrate} bit/s; tabulated rates: "
        f"{', '.join(str(b) for b in rates)} bit/s; or pass ie= and bpl= explicitly"
    )


def _interpolate(rows: list[CodecImpairment], bitrate: float) -> CodecImpairment:
    rows = sorted((r for r in rows if r.bitrate is not None), key=lambda r: r.bitrate)
    for lo, hi in zip(rows, rows[1:]):
        if lo.bitrate <= bitrate <= hi.bitrate:  # type: ignore[operator]
            t = (math.log2(bitrate) - math.log2(lo.bitrate)) / (
                math.log2(hi.bitrate) - math.log2(lo.bitrate)  # type: ignore[arg-type]
            )
            return CodecImpairment(
                lo.codec, int(round(bitrate)), lo.wideband, lo.plc,
                lo.ie + t * (hi.ie - lo.ie), lo.bpl + t * (hi.bpl - lo.bpl),
                "estimate", "estimate",
                f"interpolated in log2(bitrate) between {lo.bitrate} and {hi.bitrate} "
                f"bit/s; {lo.note}",
            )
    raise ParameterError(f"bitrate {bitrate} outside the tabulated range")  # pragma: no cover


# ----------------------------------------------------------------------------- model


@dataclass(frozen=True)
class EModelResult:
    """Outcome of :func:`r_factor`.

    Attributes
    ----------
    r_factor : float
        Transmission rating R (narrowband 0..100, wideband 0..129; not clamped).
    mos_cqe : float
        Estimated conversational MOS (1..4.5).
    id : float
        Delay impairment ``Id``.
    ie_eff : float
        Effective equipment impairment ``Ie,eff`` (codec plus packet loss).
    ro_minus_is : float
        ``Ro - Is`` used (93.2, 129 wideband, or the G.107 computation).
    ie : float
        Codec equipment impairment ``Ie`` used.
    bpl : float
        Packet-loss robustness ``Bpl`` used.
    delay_ms : float
        One-way mouth-to-ear delay ``Ta`` in ms.
    loss_rate : float
        Packet loss rate 0..1 (``Ppl`` = 100 x this).
    burst_ratio : float
        ``BurstR``.
    wideband : bool
        True when computed on the G.107.1 scale.
    delay_model : str
        ``"simplified"`` or ``"g107"``.
    source : str
        Provenance of ``ie``/``bpl`` (``"explicit"`` when passed in).
    estimated : bool
        True when ``ie`` or ``bpl`` is an estimate rather than a G.113 value.
    """

    r_factor: float
    mos_cqe: float
    id: float
    ie_eff: float
    ro_minus_is: float
    ie: float
    bpl: float
    delay_ms: float
    loss_rate: float
    burst_ratio: float
    wideband: bool
    delay_model: str
    source: str
    estimated: bool


def _finite(name: str, value: Any, *, low: float | None = None, high: float | None = None,
            low_open: bool = False) -> float:
    if isinstance(value, bool):
        raise ParameterError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ParameterError(f"{name} must be finite, got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        bound = ">" if low_open else ">="
        raise ParameterError(f"{name} must be {bound} {low}, got {v}")
    if high is not None and v > high:
        raise ParameterError(f"{name} must be <= {high}, got {v}")
    return v


def _poly(r: float) -> float:
    return 1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)


def mos_from_r(r: float, *, wideband: bool = False) -> float:
    """Map a transmission rating R to ``MOS_CQE`` (G.107 Annex B, G.107.1 Annex A).

    Parameters
    ----------
    r : float
        Rating R (narrowband scale 0..100, or wideband 0..129 with ``wideband=True``).
    wideband : bool
        Divide R by 1.29 first (G.107.1).

    Returns
    -------
    float
        MOS in [1, 4.5].

    Examples
    --------
    >>> round(mos_from_r(93.2), 2)
    4.41
    >>> mos_from_r(129.0, wideband=True)
    4.5
    """
    x = _finite("r", r)
    if wideband:
        x /= WB_SCALE
    if x <= 0.0:
        return 1.0
    if x >= 100.0:
        return 4.5
    return max(1.0, _poly(x))


# The polynomial is increasing from R = 3.22 on and equals 1 again at this R.
_R_MOS1 = (160.0 - math.sqrt(160.0**2 - 4000.0)) / 2.0


def r_from_mos(mos: float, *, wideband: bool = False) -> float:
    """Invert :func:`mos_from_r` by bisection.

    Parameters
    ----------
    mos : float
        MOS in [1, 4.5].
    wideband : bool
        Return R on the G.107.1 scale (x 1.29).

    Returns
    -------
    float
        The smallest R with ``mos_from_r(R) == mos`` on the increasing branch. For
        ``mos == 1`` this is R = 6.52 (every R below it also maps to 1).

    Raises
    ------
    ParameterError
        ``mos`` outside [1, 4.5].
    """
    m = _finite("mos", mos, low=1.0, high=4.5)
    lo, hi = _R_MOS1, 100.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _poly(mid) < m:
            lo = mid
        else:
            hi = mid
    r = 0.5 * (lo + hi)
    return r * WB_SCALE if wideband else r


def burst_ratio(loss_rate: float, mean_burst_length: float) -> float:
    """``BurstR`` of a two-state Markov (Gilbert) loss model (G.107 section 7.5).

    With ``p`` the probability of going from "packet received" to "packet lost" and
    ``q`` that of the way back, the loss rate is ``p / (p + q)`` and the mean burst
    length ``1 / q``; G.107 defines ``BurstR = 1 / (p + q)``. Hence
    ``q = 1 / mean_burst_length`` and ``p = q loss_rate / (1 - loss_rate)``.
    Random (independent) loss has ``p + q = 1``, i.e. ``BurstR = 1`` and a mean
    burst length of ``1 / (1 - loss_rate)``.

    Parameters
    ----------
    loss_rate : float
        Long-run packet loss rate, 0 <= loss_rate < 1.
    mean_burst_length : float
        Mean number of consecutive lost packets, >= 1.

    Returns
    -------
    float
        ``BurstR`` (> 1 burstier than random, < 1 more evenly spread).

    Raises
    ------
    ParameterError
        Out-of-range inputs, or a combination no Gilbert model has (``p > 1``).

    Examples
    --------
    >>> round(burst_ratio(0.02, 1 / 0.98), 6)
    1.0
    """
    lr = _finite("loss_rate", loss_rate, low=0.0)
    if lr >= 1.0:
        raise ParameterError(f"loss_rate must be < 1 for a burst model, got {lr}")
    mbl = _finite("mean_burst_length", mean_burst_length, low=1.0)
    q = 1.0 / mbl
    p = q * lr / (1.0 - lr)
    if p > 1.0 + 1e-12:
        raise ParameterError(
            f"no Gilbert model has loss_rate {lr} with mean burst length {mbl} "
            f"(needs p = {p:.3f} > 1); use a longer mean burst length"
        )
    return 1.0 / (p + q)


def effective_equipment_impairment(ie: float, bpl: float, loss_rate: float,
                                   burst_ratio: float = 1.0) -> float:
    """``Ie,eff = Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl)``, ``Ppl = 100 loss_rate``."""
    ppl = 100.0 * loss_rate
    if ppl == 0.0:
        return ie
    return ie + (95.0 - ie) * ppl / (ppl / burst_ratio + bpl)


# G.107 (06/2015) Table 3 default values.
_G107_DEFAULTS = dict(
    SLR=8.0, RLR=2.0, STMR=15.0, LSTR=18.0, Ds=3.0, TELR=65.0, WEPL=110.0, qdu=1.0,
    Nc=-70.0, Nfor=-64.0, Ps=35.0, Pr=35.0, mT=100.0,
)


def _g107_terms(ta_ms: float) -> tuple[float, float]:
    """(Ro - Is, Id) of G.107 with default inputs, T = Ta, Tr = 2 Ta."""
    d = _G107_DEFAULTS
    slr, rlr, stmr, telr = d["SLR"], d["RLR"], d["STMR"], d["TELR"]
    t, tr = ta_ms, 2.0 * ta_ms
    olr = slr + rlr
    # Ro: basic signal-to-noise ratio (7.2)
    nos = d["Ps"] - slr - d["Ds"] - 100.0 + 0.004 * (d["Ps"] - olr - d["Ds"] - 14.0) ** 2
    pre = d["Pr"] + 10.0 * math.log10(1.0 + 10.0 ** ((10.0 - d["LSTR"]) / 10.0))
    nor = rlr - 121.0 + pre + 0.008 * (pre - 35.0) ** 2
    nfo = d["Nfor"] + rlr
    no = 10.0 * math.log10(sum(10.0 ** (x / 10.0) for x in (d["Nc"], nos, nor, nfo)))
    ro = 15.0 - 1.5 * (slr + no)
    # Is: simultaneous impairments (7.3)
    xolr = olr + 0.2 * (64.0 + no - rlr)
    iolr = 20.0 * ((1.0 + (xolr / 8.0) ** 8) ** (1.0 / 8.0) - xolr / 8.0)
    stmro = -10.0 * math.log10(10.0 ** (-stmr / 10.0) + math.exp(-t / 4.0) * 10.0 ** (-telr / 10.0))
    ist = (
        12.0 * (1.0 + ((stmro - 13.0) / 6.0) ** 8) ** (1.0 / 8.0)
        - 28.0 * (1.0 + ((stmro + 1.0) / 19.4) ** 35) ** (1.0 / 35.0)
        - 13.0 * (1.0 + ((stmro - 3.0) / 33.0) ** 13) ** (1.0 / 13.0)
        + 29.0
    )
    q = 37.0 - 15.0 * math.log10(d["qdu"])
    g = 1.07 + 0.258 * q + 0.0602 * q * q
    y = (ro - 100.0) / 15.0 + 46.0 / 8.4 - g / 9.0
    z = 46.0 / 30.0 - g / 40.0
    iq = 15.0 * math.log10(1.0 + 10.0**y + 10.0**z)
    is_ = iolr + ist + iq
    # Id: talker echo, listener echo, pure delay (7.4)
    roe = -1.5 * (no - rlr)
    terv = telr - 40.0 * math.log10((1.0 + t / 10.0) / (1.0 + t / 150.0)) + 6.0 * math.exp(-0.3 * t * t)
    if stmr < 9.0:
        terv += ist / 2.0
    re = 80.0 + 2.5 * (terv - 14.0)
    idte = ((roe - re) / 2.0 + math.sqrt((roe - re) ** 2 / 4.0 + 100.0) - 1.0) * (1.0 - math.exp(-t))
    if stmr > 20.0:
        idte = math.sqrt(idte**2 + ist**2)
    rle = 10.5 * (d["WEPL"] + 7.0) * (tr + 1.0) ** -0.25
    idle = (ro - rle) / 2.0 + math.sqrt((ro - rle) ** 2 / 4.0 + 169.0)
    return ro - is_, idte + idle + _idd(ta_ms)


def _idd(ta_ms: float, mt: float = 100.0) -> float:
    """Pure-delay impairment Idd of G.107 (06/2015) eq. (7-27..7-29), sT = 1."""
    if ta_ms <= mt:
        return 0.0
    x = math.log(ta_ms / mt) / math.log(2.0)
    return 25.0 * ((1.0 + x**6) ** (1.0 / 6.0) - 3.0 * (1.0 + (x / 3.0) ** 6) ** (1.0 / 6.0) + 2.0)


def delay_impairment(delay_ms: float, *, delay_model: str = "simplified") -> float:
    """Delay impairment ``Id`` for a one-way mouth-to-ear delay (ms).

    ``"simplified"``: ``0.024 Ta + 0.11 (Ta - 177.3) H(Ta - 177.3)``.
    ``"g107"``: ``Idte + Idle + Idd`` of G.107 with default echo parameters
    (0.15 at zero delay).
    """
    ta = _finite("delay_ms", delay_ms, low=0.0)
    if delay_model == "simplified":
        return 0.024 * ta + (0.11 * (ta - 177.3) if ta > 177.3 else 0.0)
    if delay_model == "g107":
        return _g107_terms(ta)[1]
    raise ParameterError(f"delay_model must be 'simplified' or 'g107', got {delay_model!r}")


def r_factor(
    *,
    delay_ms: float,
    loss_rate: float = 0.0,
    burst_ratio: float = 1.0,
    codec: str = "pcmu",
    bitrate: int | None = None,
    plc: bool = True,
    ie: float | None = None,
    bpl: float | None = None,
    wideband: bool = False,
    delay_model: str = "simplified",
) -> EModelResult:
    """Rate a connection with the E-model (G.107, or G.107.1 with ``wideband=True``).

    Parameters
    ----------
    delay_ms : float
        One-way mouth-to-ear delay ``Ta`` in ms (codec + packetization + network +
        jitter buffer), >= 0.
    loss_rate : float
        Packet loss rate seen by the decoder, 0..1 (converted to ``Ppl`` percent).
    burst_ratio : float
        ``BurstR`` (1 = random loss); see :func:`burst_ratio`.
    codec : str
        Codec registry name for the ``Ie``/``Bpl`` lookup (:func:`ie_bpl`).
    bitrate : int, optional
        Codec bit rate in bit/s for multi-rate codecs.
    plc : bool
        Whether the receiver conceals losses (G.711: Bpl 25.1 with, 4.3 without).
    ie, bpl : float, optional
        Override the table; when both are given the codec is not looked up.
    wideband : bool
        Use the G.107.1 wideband model (``Ro,WB = 129``, MOS from R / 1.29).
    delay_model : {"simplified", "g107"}
        How ``Id`` (and, for ``"g107"`` narrowband, ``Ro - Is``) is computed; see the
        module docstring.

    Returns
    -------
    EModelResult

    Raises
    ------
    ParameterError
        Out-of-range inputs, unknown ``delay_model``, or an unknown codec without
        ``ie`` and ``bpl``.

    Examples
    --------
    >>> round(r_factor(delay_ms=150.0).mos_cqe, 2)
    4.33
    >>> round(r_factor(delay_ms=0.0, loss_rate=0.02, codec="g729").mos_cqe, 2)
    3.79
    """
    ta = _finite("delay_ms", delay_ms, low=0.0)
    lr = _finite("loss_rate", loss_rate, low=0.0, high=1.0)
    br = _finite("burst_ratio", burst_ratio, low=0.0, low_open=True)
    if delay_model not in ("simplified", "g107"):
        raise ParameterError(f"delay_model must be 'simplified' or 'g107', got {delay_model!r}")
    if ie is not None and bpl is not None:
        ie_v, bpl_v, source, estimated = float(ie), float(bpl), "explicit", False
    else:
        row = _lookup(codec, bitrate=bitrate, plc=plc, wideband=wideband)
        ie_v, bpl_v, source, estimated = row.ie, row.bpl, row.source, row.estimated
        if ie is not None:
            ie_v, source = float(ie), f"Ie explicit; {row.source}"
            estimated = row.bpl_status == "estimate"
        if bpl is not None:
            bpl_v, source = float(bpl), f"Bpl explicit; {row.source}"
            estimated = row.ie_status == "estimate"
    ie_v = _finite("ie", ie_v, low=0.0, high=95.0 if not wideband else 129.0)
    bpl_v = _finite("bpl", bpl_v, low=0.0, low_open=True)

    if wideband:
        ro_is = RO_WB
        id_v = _idd(ta) if delay_model == "g107" else delay_impairment(ta)
    elif delay_model == "g107":
        ro_is, id_v = _g107_terms(ta)
    else:
        ro_is, id_v = RO_MINUS_IS, delay_impairment(ta)
    ie_eff = effective_equipment_impairment(ie_v, bpl_v, lr, br)
    r = ro_is - id_v - ie_eff
    return EModelResult(
        r_factor=r,
        mos_cqe=mos_from_r(r, wideband=wideband),
        id=id_v,
        ie_eff=ie_eff,
        ro_minus_is=ro_is,
        ie=ie_v,
        bpl=bpl_v,
        delay_ms=ta,
        loss_rate=lr,
        burst_ratio=br,
        wideband=bool(wideband),
        delay_model=delay_model,
        source=source,
        estimated=estimated,
    )
