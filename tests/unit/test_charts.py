"""The plotly pages: one offline HTML file each with plotly.js inlined once, gaps as gaps, every
version and retrain visible (none hiding another), one colour per policy, user text escaped."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from mlflow_retrain.usecases.backtest import default_policies
from mlflow_retrain.usecases.charts import RetrainEvent, WindowPoint, dashboard_html
from mlflow_retrain.usecases.tradeoff import PolicyPoint, tradeoff_figures, tradeoff_html
from mlflow_retrain.policy.load import load_config

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2011, 5, 1)
DAY = timedelta(days=1)


def points(metrics: list[float | None], versions: list[str] | None = None) -> list[WindowPoint]:
    versions = versions or ["1"] * len(metrics)
    return [WindowPoint(T0 + DAY * i, T0 + DAY * (i + 1), m, 0 if m is None else 24, None if m is None else 0.3, 1.0,
                        v, ["metric_threshold"] if (m or 0) > 80 else [], [] if m is not None else ["data_gap: none"])
            for i, (m, v) in enumerate(zip(metrics, versions))]


def dashboard(metrics, events=(), health=(), versions=None) -> str:
    return dashboard_html(title="bikes", metric="mae", points=points(metrics, versions), threshold=80.0,
                          events=list(events), versions=[{"version": "1", "stage": "Production"}], health=list(health))


def figures(html: str) -> dict[str, dict]:
    """Every figure of a page as plotly wrote it: div id -> {"data": [...], "layout": {...}}."""
    found, decoder = {}, json.JSONDecoder()
    for match in re.finditer(r'Plotly\.newPlot\(\s*"([^"]+)",\s*', html):
        data, end = decoder.raw_decode(html, match.end())
        layout, _ = decoder.raw_decode(html, end + html[end:].index("{"))
        found[match.group(1)] = {"data": data, "layout": layout}
    return found


def assert_offline_with_one_bundle(html: str) -> None:
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""<script[^>]*\ssrc=""", html)  # nothing loaded: no CDN, no network
    assert not re.search(r"""<link[^>]*href=["']?(https?:)?//""", html)
    assert html.count("* plotly.js v") == 1  # the bundle's header: inlined exactly once
    assert len(html) > 3_000_000  # ... and really inlined (~4.5 MB)


def hover(trace: dict) -> str:
    text = trace.get("hovertext") or trace.get("text") or ""
    return "\n".join(text) if isinstance(text, list) else str(text)


def test_dashboard_is_one_offline_file_with_one_plotly_bundle():
    event = RetrainEvent(T0 + DAY * 3, "2", "promoted", "metric_threshold", "mae 90 > max 80")
    html = dashboard([50.0, None, 70.0, 90.0], [event], ["data_gap: no labelled data since 2011-05-02"])
    assert_offline_with_one_bundle(html)
    assert "Health problems" in html and "data_gap" in html and "Healthy" in dashboard([50.0])
    (figure,) = figures(html).values()
    names = [t.get("name") for t in figure["data"]]
    assert "threshold 80" in names and "trigger fired" in names and "health problem" in names
    fired = next(t for t in figure["data"] if t.get("name") == "trigger fired")
    assert len(fired["x"]) == 1 and "metric_threshold" in hover(fired)
    promoted = next(t for t in figure["data"] if str(t.get("name")).startswith("promoted"))
    assert "v2 promoted (trigger: metric_threshold) mae 90 &gt; max 80" in hover(promoted)


def test_a_missing_window_is_a_gap_in_the_line_not_zero():
    (figure,) = figures(dashboard([50.0, 60.0, None, 70.0, 90.0])).values()
    line = figure["data"][0]
    assert line["y"] == [50.0, 60.0, None, 70.0, 90.0] and line["connectgaps"] is False


def test_user_text_is_escaped():
    event = RetrainEvent(T0, "2", "rejected", "on_demand", "<script>alert(1)</script>")
    html = dashboard([50.0, 60.0], [event])
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_every_version_is_in_the_figure_and_the_x_range_covers_the_newest():
    served = ["1", "1", "2", "2", "3", "3", "4"]
    # v5 rejected and v6 promoted at the very end of the span: they must not fall off the right edge
    end = T0 + DAY * len(served)
    events = [RetrainEvent(T0 + DAY * 2, "2", "promoted", "metric_threshold", "r"),
              RetrainEvent(T0 + DAY * 4, "3", "promoted", "max_age", "r"),
              RetrainEvent(T0 + DAY * 6, "4", "promoted", "max_age", "r"),
              RetrainEvent(end, "5", "rejected", "max_age", "worse than Production"),
              RetrainEvent(end, "6", "promoted", "on_demand", "by hand")]
    (figure,) = figures(dashboard([50.0, 55.0, 60.0, 65.0, 70.0, 75.0, 78.0], events, versions=served)).values()
    text = "\n".join(hover(t) for t in figure["data"])
    for version in "123456":
        assert re.search(rf"\bv{version}\b", text), version
    lo, hi = (datetime.fromisoformat(x) for x in figure["layout"]["xaxis"]["range"])
    assert lo < T0 and hi > end  # the first window and the newest event, with a margin
    assert all(figure["layout"][axis]["range"] == figure["layout"]["xaxis"]["range"]
               for axis in ("xaxis2", "xaxis3"))


def test_rejected_and_promoted_on_the_same_date_are_both_visible():
    when = T0 + DAY * 2
    events = [RetrainEvent(when, "2", "rejected", "metric_threshold", "worse"),
              RetrainEvent(when, "3", "promoted", "on_demand", "by hand")]
    (figure,) = figures(dashboard([50.0, 90.0, 95.0, 60.0], events)).values()
    lanes = {t["name"].split(" ")[0]: t for t in figure["data"] if t.get("legendgroup") in ("promoted", "rejected")
             and t.get("mode") == "markers"}
    assert set(lanes) == {"promoted", "rejected"}
    # two markers at the same time on separate lanes, with different symbols
    assert lanes["promoted"]["x"] == lanes["rejected"]["x"] == [f"{when:%Y-%m-%d %H:%M:%S}"]
    assert lanes["promoted"]["y"] != lanes["rejected"]["y"]
    assert lanes["promoted"]["marker"]["symbol"] != lanes["rejected"]["marker"]["symbol"]
    for trace in lanes.values():  # each marker's hover lists every version of that date
        assert "v2 rejected" in hover(trace) and "v3 promoted" in hover(trace)


POLICIES = [PolicyPoint("never", "never", 0, 120.0, 160.0), PolicyPoint("every-7d", "schedule", 20, 47.0, 70.0, 12, 8),
            PolicyPoint("threshold-60", "threshold", 9, 45.0, 60.0, 6, 3),
            PolicyPoint("threshold-100", "threshold", 3, 70.0, 110.0, 2, 1),
            PolicyPoint("drift", "drift", 5, 119.0, 150.0, 1, 4),
            PolicyPoint("every-window", "every_window", 40, 42.0, 55.0, 30, 10)]
SERIES = {p.name: [(T0 + DAY * i, T0 + DAY * (i + 1), None if i == 1 else 100.0 - i) for i in range(3)]
          for p in POLICIES}
RETRAINS = {"every-7d": [(T0 + DAY, "promoted"), (T0 + DAY * 2, "rejected")], "every-window": [(T0 + DAY, "promoted")]}


def backtest_html() -> str:
    return tradeoff_html(title="t", metric="mae", policies=POLICIES, series=SERIES, recommended="threshold-60",
                         table_rows=[{"policy": p.name, "retrains": p.retrains} for p in POLICIES],
                         retrains=RETRAINS, visible=["threshold-60", "never"])


def colours(figure: dict) -> dict[str, str]:
    """Policy (legend group) -> the colour its traces use; a policy with two colours fails."""
    seen: dict[str, set[str]] = {}
    for trace in figure["data"]:
        if trace.get("legendgroup"):
            colour = (trace.get("marker") or {}).get("color") or (trace.get("line") or {}).get("color")
            seen.setdefault(trace["legendgroup"], set()).add(colour)
    assert all(len(c) == 1 for c in seen.values()), seen
    return {name: c.pop() for name, c in seen.items()}


def test_backtest_is_one_offline_file_with_one_bundle_and_two_figures():
    html = backtest_html()
    assert_offline_with_one_bundle(html)
    assert set(figures(html)) == {"tradeoff", "over-time"}
    assert "Recommended: <b>threshold-60</b>" in html and "<h2>All policies</h2>" in html


def test_a_policy_has_the_same_colour_in_both_backtest_figures():
    pages = figures(backtest_html())
    trade, over_time = colours(pages["tradeoff"]), colours(pages["over-time"])
    assert set(trade) == set(over_time) == {p.name for p in POLICIES}
    assert trade == over_time
    assert len(set(trade.values())) == len(POLICIES)  # and different policies, different colours
    # the figures built directly agree with what the page holds
    built = tradeoff_figures(metric="mae", policies=POLICIES, series=SERIES, recommended="threshold-60",
                             retrains=RETRAINS)
    assert colours(json.loads(built[0].to_json())) == colours(json.loads(built[1].to_json())) == trade


def test_tradeoff_marks_the_recommendation_the_sweep_and_hover_details():
    pages = figures(backtest_html())
    data = pages["tradeoff"]["data"]
    recommended = next(t for t in data if t.get("legendgroup") == "threshold-60")
    assert recommended["marker"]["symbol"] == "star" and "(recommended)" in hover(recommended)
    assert "9 retrains (6 promoted, 3 rejected)" in hover(recommended) and "mean mae 45" in hover(recommended)
    sweep = next(t for t in data if t.get("name") == "threshold sweep")
    assert sweep["x"] == [3, 9]  # the threshold policies, by retrains
    assert not any(t.get("text") for t in data)  # no text labels drawn on the plot: legend and hover only
    lines = {t["legendgroup"]: t for t in pages["over-time"]["data"] if t.get("mode") == "lines"}
    assert lines["threshold-60"].get("visible", True) is True and lines["drift"]["visible"] == "legendonly"
    assert lines["never"]["y"][1] is None and lines["never"]["connectgaps"] is False
    marks = [t for t in pages["over-time"]["data"] if t.get("legendgroup") == "every-7d" and t.get("mode") == "markers"]
    assert sorted(t["marker"]["symbol"] for t in marks) == ["triangle-up", "x"]


@pytest.mark.parametrize("every, names", [(timedelta(days=1), ["every-7d", "every-30d"]),
                                          (timedelta(days=7), ["every-49d", "every-210d"]),
                                          (timedelta(hours=1), ["every-7h", "every-30h"])])
def test_schedules_are_named_by_the_cadence_they_really_retrain_at(every, names):
    config = load_config(REPO / "retrain.yaml")
    schedules = [p for p in default_policies(config, every, thresholds=[50.0]) if p.family == "schedule"]
    assert [p.name for p in schedules] == names
    # a schedule is a cadence the replay keeps (tests/integration/test_backtest_schedules.py), no trigger
    assert [p.cadence for p in schedules] == [every * 7, every * 30]
    assert all(not p.config.triggers.configured for p in schedules)


def test_the_dashboard_shows_which_columns_drifted_under_the_drift_share():
    from mlflow_retrain.measure.drift import ColumnDrift

    shown = points([50.0, 60.0, None])
    shown[0].drift_columns = [ColumnDrift("hour", "K-S p_value", 0.05, 0.9, False),
                              ColumnDrift("workingday", "Z-test p_value", 0.05, 0.001, True)]
    shown[1].drift_columns = [ColumnDrift("hour", None, float("nan"), float("nan"), False),
                              ColumnDrift("workingday", "Z-test p_value", 0.05, 0.2, False)]
    html = dashboard_html(title="t", metric="mae", points=shown, threshold=80.0, events=[], versions=[], health=[])
    (heatmap,) = [t for t in figures(html)["monitor"]["data"] if t["type"] == "heatmap"]
    assert heatmap["y"] == ["hour", "workingday"] and heatmap["yaxis"] == "y3"
    # one row per feature, one cell per window: drifted 1, not 0, a gap where nothing was measured
    assert heatmap["z"] == [[0.0, None, None], [1.0, 0.0, None]]
    cells = "\n".join(text for row in heatmap["hovertext"] for text in row)
    assert "workingday: drifted<br>Z-test p_value 0.001, threshold 0.05" in cells
    assert "hour: no values, not measured" in cells
