"""Self-contained HTML charts with plotly: the monitoring dashboard here, the backtest trade-off in `tradeoff.py`.

Each page is one HTML file that opens offline, from a CI artifact or an MLflow run: plotly.js is
inlined once per file (the first figure carries it, the others reuse it; ~4.5 MB), nothing is
fetched from a CDN. Details live in hover text and legends, never in text labels drawn on the plot,
so nothing overlaps. A window without data is a gap in the line (`None`, `connectgaps=False`),
never zero. Text a user wrote (reasons, triggers, titles) is HTML-escaped before plotly sees it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html import escape
from typing import TYPE_CHECKING, Any, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

if TYPE_CHECKING:
    from mlflow_retrain.measure.drift import ColumnDrift

METRIC_COLOR, DRIFT_COLOR, THRESHOLD_COLOR = "#1f77b4", "#9467bd", "#c62828"
FIRED_COLOR, HEALTH_COLOR = "#ef6c00", "#c62828"
STEADY_COLOR = "#ede7f6"  # a measured column that did not drift (drifted ones take DRIFT_COLOR)
DECISION_STYLE = {"promoted": ("#2e7d32", "triangle-up"), "rejected": ("#c62828", "x"),
                  "challenger": ("#f9a825", "diamond")}
OTHER_DECISION = ("#757575", "circle-open")
CONFIG = {"displaylogo": False, "responsive": True}
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px;margin:0 0 8px} h2{font-size:16px;margin:24px 0 6px}
.ok{background:#e8f5e9;border-left:4px solid #2e7d32;padding:8px 12px}
.bad{background:#ffebee;border-left:4px solid #c62828;padding:8px 12px}
.bad li{margin:2px 0} table{border-collapse:collapse;font-size:13px;margin-top:6px}
td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5} td:first-child{white-space:nowrap} .muted{color:#666;font-size:13px}
"""


@dataclass
class WindowPoint:
    """One monitored window: the serving version's numbers, or `None` where there was nothing to score."""

    start: datetime
    end: datetime
    metric: float | None
    rows: int
    drift_share: float | None
    latency_ms: float | None
    version: str | None
    fired: list[str] = field(default_factory=list)
    health: list[str] = field(default_factory=list)
    drift_columns: list[ColumnDrift] = field(default_factory=list)  # each measured feature's test and verdict
    estimate: float | None = None  # the metric estimated without labels (`estimated_metric`), beside the real one
    challenger: float | None = None  # the challenger's metric on the same rows, while there is one
    challenger_version: str | None = None


@dataclass(frozen=True)
class RetrainEvent:
    """A cycle that produced (or promoted) a version, at data time `time`."""

    time: datetime
    version: str
    decision: str
    trigger: str
    reason: str


def short_number(value: float | None, digits: int = 3) -> str:
    """A number in a few digits for hover text and tables; a dash for none (or NaN), never "nan"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"


def short_time(moment: datetime) -> str:
    """The date alone at midnight (daily windows), else date and time: short, and plotly parses both."""
    return f"{moment:%Y-%m-%d}" if moment.time() == datetime.min.time() else f"{moment:%Y-%m-%d %H:%M}"


def midpoint(start: datetime, end: datetime) -> str:
    """The middle of a window, where its bar or cell is drawn."""
    return f"{start + (end - start) / 2:%Y-%m-%d %H:%M:%S}"


def padded_range(lo: datetime, hi: datetime) -> list[str]:
    """An x range holding [lo, hi] with a margin, so markers at either end are drawn whole."""
    pad = max((hi - lo) * 0.02, timedelta(hours=1))
    return [f"{lo - pad:%Y-%m-%d %H:%M:%S}", f"{hi + pad:%Y-%m-%d %H:%M:%S}"]


def figure_div(fig: go.Figure, div_id: str, first: bool) -> str:
    """One figure's `<div>`; the first of a page inlines plotly.js, the others use it."""
    return fig.to_html(full_html=False, include_plotlyjs=first, config=CONFIG, div_id=div_id)


def html_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return '<p class="muted">none</p>'
    columns = list(columns or rows[0].keys())
    # column names like windows_worse_than_threshold may break after an underscore, so wide tables fit the page
    head = "".join(f"<th>{escape(str(c)).replace('_', '_<wbr>')}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return short_number(value, 4)
    return "" if value is None else str(value)


def html_page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>\n")


def _health_box(health: Sequence[str]) -> str:
    if not health:
        return '<div class="ok">Healthy: the model loaded and predicted in every window, and labels kept arriving.</div>'
    shown = list(health)[:20]
    more = f"<li>… and {len(health) - 20} more</li>" if len(health) > 20 else ""
    return ('<div class="bad"><b>Health problems</b><ul>' + "".join(f"<li>{escape(h)}</li>" for h in shown)
            + more + "</ul></div>")


# --- the monitoring dashboard ---------------------------------------------------------------------


def _window_hover(p: WindowPoint, metric: str) -> str:
    lines = [f"{short_time(p.start)}..{short_time(p.end)}{' (partial)' if getattr(p, 'partial', False) else ''}",
             f"v{escape(str(p.version))}: {escape(metric)} {short_number(p.metric)}, {p.rows} rows",
             f"drift share {short_number(p.drift_share, 2)}, latency {short_number(p.latency_ms)} ms"]
    lines += [f"fired: {escape(f)}" for f in p.fired] + [f"health: {escape(h)}" for h in p.health]
    return "<br>".join(lines)


def _event_line(e: RetrainEvent) -> str:
    return escape(f"{short_time(e.time)} v{e.version} {e.decision} (trigger: {e.trigger}) {e.reason}".rstrip())


def _runs(points: Sequence[WindowPoint], marked) -> list[tuple[datetime, datetime]]:
    """Consecutive marked windows merged into one span: one shaded rectangle each."""
    spans: list[tuple[datetime, datetime]] = []
    for p in points:
        if not marked(p):
            continue
        if spans and spans[-1][1] >= p.start:
            spans[-1] = (spans[-1][0], p.end)
        else:
            spans.append((p.start, p.end))
    return spans


def _column_hover(p: WindowPoint, c: ColumnDrift) -> str:
    head = f"{short_time(p.start)}..{short_time(p.end)} v{escape(str(p.version))}<br>{escape(c.column)}: "
    if c.method is None:
        return head + "no values, not measured"
    verdict = "drifted" if c.drifted else "no drift"
    return head + f"{verdict}<br>{escape(c.method)} {short_number(c.score, 3)}, threshold {short_number(c.threshold, 3)}"


def drift_columns_trace(points: Sequence[WindowPoint], mids: Sequence[str]) -> go.Heatmap | None:
    """One row per measured feature, one cell per window: drifted (dark) or not (light), a gap where
    the window had no drift measured; the test, score and threshold in the hover. Drifted yes/no
    rather than the score, because scores of different tests (p-values, distances) do not compare."""
    names = list(dict.fromkeys(c.column for p in points for c in p.drift_columns))
    if not names:
        return None
    cells = [{c.column: c for c in p.drift_columns} for p in points]
    z = [[None if (c := cell.get(n)) is None or c.method is None else float(c.drifted) for cell in cells]
         for n in names]
    hover = [[_column_hover(p, cell[n]) if n in cell else "" for p, cell in zip(points, cells)] for n in names]
    return go.Heatmap(x=list(mids), y=names, z=z, zmin=0, zmax=1, showscale=False, xgap=1, ygap=1,
                      colorscale=[[0, STEADY_COLOR], [0.5, STEADY_COLOR], [0.5, DRIFT_COLOR], [1, DRIFT_COLOR]],
                      name="drifted columns", hovertext=hover, hoverinfo="text")


def dashboard_figure(*, metric: str, points: Sequence[WindowPoint], threshold: float | None,
                     events: Sequence[RetrainEvent]) -> go.Figure:
    """Four rows on one time axis: the metric per window (threshold, fired windows, health problems,
    promotions), drift share, which columns drifted, and the retrain events, promoted and rejected on
    separate lanes.

    The x range covers every window and every event. Events at one moment are one marker per
    decision, each listing in its hover every event of that date, so none hides another.
    """
    fig = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        row_heights=[0.5, 0.16, 0.18, 0.16])
    mids = [midpoint(p.start, p.end) for p in points]
    values = [p.metric if p.metric is not None and math.isfinite(p.metric) else None for p in points]
    finite = [v for v in values if v is not None] + ([threshold] if threshold is not None else [])
    top = max(finite, default=1.0)
    y_lo = min([0.0, *finite])
    y_hi = top + abs(top) * 0.08 if top + abs(top) * 0.08 > y_lo else y_lo + 1.0
    fig.add_trace(go.Scatter(x=mids, y=values, mode="lines+markers", name=f"{metric} per window",
                             line={"color": METRIC_COLOR, "width": 1.6}, marker={"size": 4}, connectgaps=False,
                             hovertext=[_window_hover(p, metric) for p in points], hoverinfo="text"), row=1, col=1)
    if any(p.estimate is not None for p in points):  # where it parts from the metric, the estimate is blind
        fig.add_trace(go.Scatter(x=mids, y=[p.estimate for p in points], mode="lines+markers", connectgaps=False,
                                 name=f"{metric} estimated without labels", line={"dash": "dot", "width": 1.4},
                                 marker={"size": 3}), row=1, col=1)
    if any(p.challenger is not None for p in points):  # what the challenger's rounds compare
        fig.add_trace(go.Scatter(x=mids, y=[p.challenger for p in points], mode="lines+markers", connectgaps=False,
                                 name=f"{metric} of the challenger", line={"color": DECISION_STYLE["challenger"][0],
                                                                           "width": 1.4}, marker={"size": 4}),
                      row=1, col=1)
    lo = min([points[0].start, *(e.time for e in events)]) if points else min(e.time for e in events)
    hi = max([points[-1].end, *(e.time for e in events)]) if points else max(e.time for e in events)
    if threshold is not None:
        fig.add_trace(go.Scatter(x=[f"{lo:%Y-%m-%d %H:%M:%S}", f"{hi:%Y-%m-%d %H:%M:%S}"], y=[threshold, threshold],
                                 mode="lines", name=f"threshold {short_number(threshold)}", hoverinfo="name",
                                 line={"color": THRESHOLD_COLOR, "dash": "dash", "width": 1.2}), row=1, col=1)
    for label, color, symbol, marked in (("trigger fired", FIRED_COLOR, "circle-open", lambda p: bool(p.fired)),
                                         ("health problem", HEALTH_COLOR, "x", lambda p: bool(p.health))):
        chosen = [i for i, p in enumerate(points) if marked(p)]
        for start, end in _runs(points, marked):
            fig.add_vrect(x0=f"{start:%Y-%m-%d %H:%M:%S}", x1=f"{end:%Y-%m-%d %H:%M:%S}", fillcolor=color,
                          opacity=0.12, line_width=0, layer="below", row=1, col=1)
        if chosen:  # on the line where there is a number, on the floor where there is none
            fig.add_trace(go.Scatter(x=[mids[i] for i in chosen], y=[values[i] if values[i] is not None else y_lo
                                                                    for i in chosen],
                                     mode="markers", name=label, marker={"color": color, "symbol": symbol, "size": 10},
                                     hovertext=[_window_hover(points[i], metric) for i in chosen], hoverinfo="text"),
                          row=1, col=1)
    promoted = sorted({e.time for e in events if e.decision == "promoted"})
    if promoted:  # where the serving model changed, across the metric row
        xs: list[str | None] = []
        ys: list[float | None] = []
        for moment in promoted:
            xs += [f"{moment:%Y-%m-%d %H:%M:%S}"] * 2 + [None]
            ys += [y_lo, y_hi, None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="promotion", hoverinfo="skip", legendgroup="promoted",
                                 line={"color": DECISION_STYLE["promoted"][0], "width": 1, "dash": "dot"}),
                      row=1, col=1)
    drifted = [i for i, p in enumerate(points) if p.drift_share is not None]
    fig.add_trace(go.Bar(x=[mids[i] for i in drifted], y=[points[i].drift_share for i in drifted],
                         width=[(points[i].end - points[i].start).total_seconds() * 1000 * 0.9 for i in drifted],
                         name="drift share", marker={"color": DRIFT_COLOR},
                         hovertext=[f"{short_time(points[i].start)}..{short_time(points[i].end)} v{escape(str(points[i].version))}"
                                    f"<br>drift share {points[i].drift_share:.2f}" for i in drifted],
                         hoverinfo="text"), row=2, col=1)
    if (columns := drift_columns_trace(points, mids)) is not None:
        fig.add_trace(columns, row=3, col=1)
    by_date: dict[str, list[str]] = defaultdict(list)
    for e in events:
        by_date[f"{e.time:%Y-%m-%d}"].append(_event_line(e))
    lanes: dict[str, dict[datetime, list[RetrainEvent]]] = defaultdict(lambda: defaultdict(list))
    for e in events:
        lanes[e.decision][e.time].append(e)
    order = [d for d in DECISION_STYLE if d in lanes] + sorted(d for d in lanes if d not in DECISION_STYLE)
    for decision in order:
        color, symbol = DECISION_STYLE.get(decision, OTHER_DECISION)
        moments = sorted(lanes[decision])
        fig.add_trace(go.Scatter(
            x=[f"{m:%Y-%m-%d %H:%M:%S}" for m in moments], y=[decision] * len(moments), mode="markers",
            name=f"{decision} ({sum(len(lanes[decision][m]) for m in moments)})", legendgroup=decision,
            marker={"color": color, "symbol": symbol, "size": 11, "line": {"width": 1.5, "color": color}},
            customdata=[[",".join(e.version for e in lanes[decision][m])] for m in moments],
            hovertext=["<br>".join(by_date[f"{m:%Y-%m-%d}"]) for m in moments], hoverinfo="text"), row=4, col=1)
    fig.update_xaxes(range=padded_range(lo, hi), type="date")
    fig.update_yaxes(title_text=escape(metric), range=[y_lo, y_hi], row=1, col=1)
    fig.update_yaxes(title_text="drift share", range=[0, 1], row=2, col=1)
    fig.update_yaxes(title_text="drifted", type="category", autorange="reversed", row=3, col=1)
    fig.update_yaxes(title_text="retrains", type="category", categoryorder="array",
                     categoryarray=list(reversed(order)), row=4, col=1)
    fig.update_layout(template="plotly_white", height=760, margin={"l": 60, "r": 20, "t": 30, "b": 40},
                      hovermode="closest", bargap=0, legend={"orientation": "h", "y": 1.06, "x": 0})
    return fig


def dashboard_html(*, title: str, metric: str, points: Sequence[WindowPoint], threshold: float | None,
                   events: Sequence[RetrainEvent], versions: Sequence[dict[str, Any]],
                   health: Sequence[str]) -> str:
    """The monitoring dashboard: error over time with threshold, fired windows, retrains, drift, versions."""
    if not points and not events:
        return html_page(title, _health_box(health) + '<p class="muted">No windows in the span.</p>')
    values = [p.metric for p in points if p.metric is not None and math.isfinite(p.metric)]
    summary = (f'<p class="muted">{len(points)} windows, {sum(1 for p in points if p.metric is not None)} with data; '
               f"mean {escape(metric)} {short_number(sum(values) / len(values) if values else None)}; "
               f"{sum(1 for p in points if p.fired)} windows with a trigger fired; {len(events)} retrain events. "
               "Hover for each window's version and numbers, and each retrain's reason.</p>")
    figure = dashboard_figure(metric=metric, points=points, threshold=threshold, events=events)
    event_rows = [{"time": f"{e.time:%Y-%m-%d %H:%M}", "version": e.version, "decision": e.decision,
                   "trigger": e.trigger, "reason": e.reason} for e in events]
    return html_page(title, _health_box(health) + summary + figure_div(figure, "monitor", first=True)
                     + "<h2>Retrain events</h2>" + html_table(event_rows)
                     + "<h2>Versions</h2>" + html_table(list(versions)))
