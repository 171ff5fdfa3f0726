"""Chapter 4's transit/jitter figure: lost packets are not drawn on the transit axis."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from voicelab.errors import ParameterError
from voicelab.rtp.virtual import rfc3550_jitter_ms
from voicelab.viz.rtp import transit_jitter_figure


def _packets():
    send = np.arange(10) * 0.02
    transit = np.array([40, 45, 38, np.nan, 50, 41, np.nan, 39, 44, 42], dtype=float)
    return pd.DataFrame({"send_time_s": send, "transit_ms": transit,
                         "arrival_time_s": np.where(np.isnan(transit), np.nan, send + transit / 1000)})


def test_lost_packets_have_their_own_strip_and_jitter_its_own_axis():
    fig = transit_jitter_figure(_packets())
    transit, jitter, lost = fig.data
    assert len(transit.x) == 8 and len(lost.x) == 2
    assert list(lost.x) == pytest.approx([0.06, 0.12])
    assert lost.yaxis != transit.yaxis and jitter.yaxis not in (transit.yaxis, lost.yaxis)
    assert fig.layout.yaxis2.rangemode == "tozero"
    assert not any(getattr(fig.layout, k).overlaying for k in ("yaxis", "yaxis2", "yaxis3"))
    rec = _packets().dropna()
    assert list(jitter.y) == pytest.approx(list(rfc3550_jitter_ms(rec["transit_ms"].to_numpy() / 1000, 8000)))


def test_missing_columns_are_a_parameter_error():
    with pytest.raises(ParameterError):
        transit_jitter_figure(pd.DataFrame({"send_time_s": [0.0]}))
