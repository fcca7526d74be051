"""The HTML charts are self-contained, draw gaps as gaps, and escape what users wrote."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from mlflow_retrain.charts import PolicyPoint, RetrainEvent, WindowPoint, dashboard_html, tradeoff_html

T0 = datetime(2011, 5, 1)


def points(metrics: list[float | None]) -> list[WindowPoint]:
    return [WindowPoint(T0 + timedelta(days=i), T0 + timedelta(days=i + 1), m, 0 if m is None else 24,
                        None if m is None else 0.3, 1.0, "1", ["metric_threshold"] if (m or 0) > 80 else [],
                        [] if m is not None else ["data_gap: none"]) for i, m in enumerate(metrics)]


def dashboard(metrics, events=(), health=()) -> str:
    return dashboard_html(title="bikes", metric="mae", points=points(metrics), threshold=80.0, events=list(events),
                          versions=[{"version": "1", "stage": "Production"}], health=list(health))


def self_contained(html: str) -> bool:
    return not re.search(r"""(src|href)=["']?(https?:)?//""", html) and "<script" not in html


def test_a_missing_window_breaks_the_line_instead_of_dropping_to_zero():
    (path,) = re.findall(r'<path d="([^"]*)"', dashboard([50.0, 60.0, None, 70.0, 90.0]))
    assert path.count("M") == 2 and path.count("L") == 2  # two sub-paths: before and after the gap


def test_dashboard_is_self_contained_and_marks_threshold_fired_windows_and_health():
    event = RetrainEvent(T0 + timedelta(days=3), "2", "promoted", "metric_threshold", "mae 90 > max 80")
    html = dashboard([50.0, None, 70.0, 90.0], [event], ["data_gap: no labelled data since 2011-05-02"])
    assert self_contained(html) and html.startswith("<!DOCTYPE html>")
    assert "threshold 80" in html and "Health problems" in html and "data_gap" in html
    assert html.count('fill="#ffe0b2"') == 1 and html.count('fill="#ffcdd2"') == 1  # fired, gap
    assert "v2 promoted (trigger: metric_threshold) mae 90 &gt; max 80" in html
    assert "Healthy" in dashboard([50.0])


def test_user_text_is_escaped():
    event = RetrainEvent(T0, "2", "rejected", "on_demand", "<script>alert(1)</script>")
    html = dashboard([50.0, 60.0], [event])
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_tradeoff_draws_every_policy_the_sweep_curve_and_the_recommendation():
    policies = [PolicyPoint("never", "never", 0, 120.0, 160.0), PolicyPoint("threshold-60", "threshold", 9, 45.0, 60.0),
                PolicyPoint("threshold-100", "threshold", 3, 70.0, 110.0),
                PolicyPoint("every-window", "every-window", 40, 42.0, 55.0)]
    series = {"never": [(T0, 100.0), (T0 + timedelta(days=1), None), (T0 + timedelta(days=2), 130.0)]}
    html = tradeoff_html(title="t", metric="mae", policies=policies, series=series, recommended="threshold-60",
                         table_rows=[{"policy": p.name, "retrains": p.retrains} for p in policies])
    assert self_contained(html)
    assert html.count("<circle") == 4 and "threshold-60 ★" in html and "Recommended: <b>threshold-60</b>" in html
    assert "absolute threshold sweep" in html and "<h2>All policies</h2>" in html
    assert "9 retrains, mean mae 45" in html


def test_names_of_nearby_policies_do_not_overlap():
    from mlflow_retrain.charts import place_labels

    anchors = [(100.0, 200.0), (104.0, 203.0), (108.0, 198.0), (101.0, 205.0), (950.0, 100.0)]
    names = ["configured", "schedule-30d", "trend", "threshold-64", "every-window"]
    boxes = []
    for (x, y, end), name in zip(place_labels(anchors, names), names):
        width = 6.2 * len(name)
        left = x - width if end else x
        assert 0 <= left and left + width <= 960  # inside the chart, even next to its right edge
        boxes.append((left, y - 10, left + width, y + 2))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
