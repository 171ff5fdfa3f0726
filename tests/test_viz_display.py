"""viz.show: every figure output carries an interactive plot and a static PNG fallback;
viz.ci_halfwidth: Student-t intervals."""

from __future__ import annotations

import base64
import re

import numpy as np
import plotly.graph_objects as go
import pytest
from scipy import stats

from voicelab import viz
from voicelab.errors import ParameterError

from .conftest import need


def _fig():
    return go.Figure(go.Bar(x=["a", "b"], y=[1, 2]), layout=dict(title="two bars", width=400, height=300))


def test_show_emits_interactive_html_and_png():
    need(viz.static_export_available(), "no Chromium for static figures (Debian package chromium)")
    bundle = viz.show(_fig())._repr_mimebundle_()
    assert {"application/vnd.plotly.v1+json", "text/html", "image/png", "text/plain"} <= set(bundle)
    png = base64.b64decode(bundle["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 400 and int.from_bytes(png[20:24], "big") == 300  # layout size
    html = bundle["text/html"]
    img = re.search(r'<img class="voicelab-static" alt="two bars" src="data:image/png;base64,([^"]+)"', html)
    assert img and img.group(1) == bundle["image/png"]
    # the image comes first; the script draws the plot and hides the image only when Plotly is on the page
    assert html.index("<img") < html.index("voicelab-plotly") < html.index("Plotly.newPlot")
    assert "if(!el||!window.Plotly){return;}" in html
    assert bundle["application/vnd.plotly.v1+json"]["data"][0]["type"] == "bar"
    assert bundle["text/plain"] == "<Figure: two bars>"


def test_show_without_static_figures(monkeypatch):
    monkeypatch.setenv("VOICELAB_STATIC_FIGURES", "0")
    out = viz.show(_fig())
    bundle = out._repr_mimebundle_()
    assert out.png is None and "image/png" not in bundle and "<img" not in bundle["text/html"]
    assert "Plotly.newPlot" in bundle["text/html"]


def test_show_rejects_what_is_not_a_figure():
    with pytest.raises(ParameterError, match="plotly Figure"):
        viz.show({"data": []})


@pytest.mark.parametrize("n", [2, 3, 5, 30])
def test_ci_halfwidth_is_student_t(n):
    rng = np.random.default_rng(n)
    x = rng.normal(3.0, 0.4, n)
    lo, hi = stats.t.interval(0.95, n - 1, loc=x.mean(), scale=stats.sem(x))
    assert viz.ci_halfwidth(x.std(ddof=1), n) == pytest.approx((hi - lo) / 2)
    if n == 3:  # the 1.96 of a normal interval is less than half the t factor at n = 3
        assert viz.ci_halfwidth(1.0, 3) / (1 / np.sqrt(3)) == pytest.approx(4.303, abs=1e-3)


def test_ci_halfwidth_single_sample_and_bad_confidence():
    assert list(viz.ci_halfwidth([0.5, np.nan], [1, 1])) == [0.0, 0.0]
    with pytest.raises(ParameterError):
        viz.ci_halfwidth(1.0, 3, confidence=95)


def test_metric_vs_param_error_bars_use_t():
    import pandas as pd

    df = pd.DataFrame({"x": [0.0] * 3, "y": [1.0, 2.0, 3.0], "codec": ["pcmu"] * 3})
    fig = viz.metric_vs_param(df, x="x", y="y", color="codec", percent_x=False)
    assert fig.data[0].error_y.array[0] == pytest.approx(stats.t.ppf(0.975, 2) * 1.0 / np.sqrt(3))


def test_labels_of_close_points_go_to_different_sides():
    # PCMU and PCMA land on nearly the same point; Opus 24k and 32k close to each other
    x = [80.0, 80.0, 37.0, 45.0, 20.0]
    y = [3.02, 3.04, 4.2, 4.25, 2.0]
    pos = viz.label_positions(x, y)
    assert pos[0] != pos[1] and pos[2] != pos[3]
    assert pos[4] == "top center"


def test_quality_vs_bitrate_uses_the_positions():
    import pandas as pd

    df = pd.DataFrame({"codec": ["pcmu 64k", "pcma 64k", "g722 64k"], "bitrate_kbps_wire": [80.0, 80.0, 80.0],
                       "pesq_wb": [3.0, 3.01, 4.0]})
    fig = viz.quality_vs_bitrate(df)
    assert len(set(fig.data[0].textposition[:2])) == 2
    with pytest.raises(ParameterError):
        viz.quality_vs_bitrate(df.drop(columns=["pesq_wb"]))


def test_show_can_take_its_static_image_from_another_figure():
    need(viz.static_export_available(), "no Chromium for static figures (Debian package chromium)")
    still = go.Figure(go.Scatter(x=[0, 1], y=[0, 1]), layout=dict(width=500, height=200))
    out = viz.show(_fig(), static=still)
    assert int.from_bytes(out.png[16:20], "big") == 500 and int.from_bytes(out.png[20:24], "big") == 200
    assert out._repr_mimebundle_()["application/vnd.plotly.v1+json"]["data"][0]["type"] == "bar"
    with pytest.raises(ParameterError):
        viz.show(_fig(), static="not a figure")


def test_emodel_vs_pesq_pairs_measured_and_predicted_per_group():
    import pandas as pd

    df = pd.DataFrame({"variant": ["a"] * 4 + ["b"] * 4, "channel.loss_rate": [0.0, 0.0, 0.1, 0.1] * 2,
                       "pesq_nb": [4.0, 4.2, 3.0, 3.2, 4.1, 4.1, 2.0, 2.2], "mos_cqe": [4.4, 4.4, 3.5, 3.5] * 2})
    fig = viz.emodel_vs_pesq(df)
    assert [t.name for t in fig.data] == ["a: PESQ-NB", "a: E-model", "b: PESQ-NB", "b: E-model"]
    assert list(fig.data[0].x) == [0.0, 10.0] and list(fig.data[0].y) == pytest.approx([4.1, 3.1])
    assert fig.data[0].error_y.array[0] == pytest.approx(stats.t.ppf(0.975, 1) * np.std([4.0, 4.2], ddof=1) / np.sqrt(2))
    assert fig.data[1].line.dash == "dash" and fig.data[0].line.color == fig.data[1].line.color
    with pytest.raises(ParameterError):
        viz.emodel_vs_pesq(df.drop(columns=["mos_cqe"]))
