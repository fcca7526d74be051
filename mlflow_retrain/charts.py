"""Self-contained HTML charts: the monitoring dashboard and the backtest trade-off.

Inline SVG written by hand with the standard library, on purpose: the files must open offline, from
a CI artifact or an MLflow run, with no CDN and no JavaScript dependency, and stay small. Hover
details use SVG `<title>`, which every browser shows as a tooltip. A window without data is drawn
as a gap in the line, never as zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any, Iterable, Sequence

WIDTH, LEFT, RIGHT, TOP, BOTTOM = 960, 64, 16, 16, 28
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1000px}
h1{font-size:20px;margin:0 0 8px} h2{font-size:16px;margin:24px 0 6px}
.ok{background:#e8f5e9;border-left:4px solid #2e7d32;padding:8px 12px}
.bad{background:#ffebee;border-left:4px solid #c62828;padding:8px 12px}
.bad li{margin:2px 0} table{border-collapse:collapse;font-size:13px;margin-top:6px}
td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5} td:first-child{white-space:nowrap} .legend span{margin-right:16px;font-size:13px} .muted{color:#666;font-size:13px}
svg text{font-size:11px;fill:#444}
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


@dataclass(frozen=True)
class RetrainEvent:
    """A cycle that produced (or promoted) a version, at data time `time`."""

    time: datetime
    version: str
    decision: str
    trigger: str
    reason: str


@dataclass(frozen=True)
class PolicyPoint:
    """One backtested policy on the trade-off chart."""

    name: str
    family: str
    retrains: int
    mean_metric: float
    p90_metric: float


class _Scale:
    """Linear map from data to pixels; a flat domain is widened so nothing divides by zero."""

    def __init__(self, lo: float, hi: float, px_lo: float, px_hi: float):
        if not (math.isfinite(lo) and math.isfinite(hi)):
            lo, hi = 0.0, 1.0
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        self.lo, self.hi, self.px_lo, self.px_hi = lo, hi, px_lo, px_hi

    def __call__(self, value: float) -> float:
        return self.px_lo + (value - self.lo) / (self.hi - self.lo) * (self.px_hi - self.px_lo)

    def ticks(self, count: int = 5) -> list[float]:
        raw = (self.hi - self.lo) / count
        step = 10 ** math.floor(math.log10(raw))
        step *= next(m for m in (1, 2, 5, 10) if raw <= step * m)
        first = math.ceil(self.lo / step) * step
        return [first + i * step for i in range(int((self.hi - first) / step + 1e-9) + 1)]


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"


def _ts(moment: datetime) -> float:
    return moment.timestamp()


def _time_axis(x: _Scale, height: float) -> str:
    """Up to ~10 date labels, evenly spaced over the span."""
    parts = []
    count = 8
    for i in range(count + 1):
        stamp = x.lo + (x.hi - x.lo) * i / count
        px = x(stamp)
        label = datetime.fromtimestamp(stamp).strftime("%Y-%m-%d")
        anchor = "start" if i == 0 else "end" if i == count else "middle"  # keep edge labels inside
        parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" y2="{height - BOTTOM}" stroke="#eee"/>'
                     f'<text x="{px:.1f}" y="{height - 10}" text-anchor="{anchor}">{label}</text>')
    return "".join(parts)


def _value_axis(y: _Scale, label: str) -> str:
    parts = [f'<text x="12" y="{TOP + 8}">{escape(label)}</text>']
    for tick in y.ticks():
        py = y(tick)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py:.1f}" y2="{py:.1f}" stroke="#eee"/>'
                     f'<text x="{LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">{_fmt(tick)}</text>')
    return "".join(parts)


def _polyline(points: Iterable[tuple[float, float | None]], x: _Scale, y: _Scale, color: str,
              title: str = "") -> str:
    """One path with a new sub-path after each missing value, so a gap shows as a gap."""
    commands, pen_down = [], False
    for xv, yv in points:
        if yv is None or not math.isfinite(yv):
            pen_down = False
            continue
        commands.append(f"{'L' if pen_down else 'M'}{x(xv):.1f},{y(yv):.1f}")
        pen_down = True
    tip = f"<title>{escape(title)}</title>" if title else ""
    return f'<path d="{" ".join(commands)}" fill="none" stroke="{color}" stroke-width="1.6">{tip}</path>'


def _svg(height: int, body: str, label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(label)}">{body}</svg>')


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return '<p class="muted">none</p>'
    columns = list(columns or rows[0].keys())
    # column names like windows_worse_than_threshold may break after an underscore, so wide tables fit the page
    head = "".join(f"<th>{escape(str(c)).replace('_', '_<wbr>')}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return _fmt(value, 4)
    return "" if value is None else str(value)


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>\n")


def _health_box(health: Sequence[str]) -> str:
    if not health:
        return '<div class="ok">Healthy: the model loaded and predicted in every window, and labels kept arriving.</div>'
    shown = list(health)[:20]
    more = f"<li>… and {len(health) - 20} more</li>" if len(health) > 20 else ""
    return ('<div class="bad"><b>Health problems</b><ul>' + "".join(f"<li>{escape(h)}</li>" for h in shown)
            + more + "</ul></div>")


def dashboard_html(*, title: str, metric: str, points: Sequence[WindowPoint], threshold: float | None,
                   events: Sequence[RetrainEvent], versions: Sequence[dict[str, Any]],
                   health: Sequence[str]) -> str:
    """The monitoring dashboard: error over time with threshold, fired windows, retrains, drift, versions."""
    if not points:
        return _page(title, _health_box(health) + '<p class="muted">No windows in the span.</p>')
    x = _Scale(_ts(points[0].start), _ts(points[-1].end), LEFT, WIDTH - RIGHT)
    values = [p.metric for p in points if p.metric is not None and math.isfinite(p.metric)]
    top = max(values + ([threshold] if threshold is not None else []), default=1.0)
    low = min(values + ([threshold] if threshold is not None else []), default=0.0)
    height = 300
    y = _Scale(min(0.0, low), top * 1.08, height - BOTTOM, TOP)
    body = [_time_axis(x, height), _value_axis(y, metric)]
    for p in points:  # shaded windows: a trigger fired (amber) or health was bad (red)
        if p.fired or p.health:
            color = "#ffcdd2" if p.health else "#ffe0b2"
            why = "; ".join(p.health + p.fired)
            body.append(f'<rect x="{x(_ts(p.start)):.1f}" y="{TOP}" width="{max(x(_ts(p.end)) - x(_ts(p.start)), 1):.1f}" '
                        f'height="{height - BOTTOM - TOP}" fill="{color}" opacity="0.7">'
                        f"<title>{escape(f'{p.start:%Y-%m-%d %H:%M}..{p.end:%Y-%m-%d %H:%M}: {why}')}</title></rect>")
    if threshold is not None:
        py = y(threshold)
        body.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py:.1f}" y2="{py:.1f}" stroke="#c62828" '
                    f'stroke-dasharray="6 4"><title>trigger threshold {_fmt(threshold)}</title></line>'
                    f'<text x="{WIDTH - RIGHT - 4}" y="{py - 4:.1f}" text-anchor="end" fill="#c62828">'
                    f"threshold {_fmt(threshold)}</text>")
    mids = [(_ts(p.start) + _ts(p.end)) / 2 for p in points]
    body.append(_polyline(zip(mids, (p.metric for p in points)), x, y, PALETTE[0], f"{metric} per window"))
    for mid, p in zip(mids, points):
        if p.metric is not None and math.isfinite(p.metric):
            body.append(f'<circle cx="{x(mid):.1f}" cy="{y(p.metric):.1f}" r="2.2" fill="{PALETTE[0]}"><title>'
                        f"{escape(f'{p.start:%Y-%m-%d %H:%M}..{p.end:%Y-%m-%d %H:%M} v{p.version}: {metric} {_fmt(p.metric)}, {p.rows} rows')}"
                        "</title></circle>")
    for index, e in enumerate(ev for ev in events if x.lo <= _ts(ev.time) <= x.hi):
        px = x(_ts(e.time))
        color = "#2e7d32" if e.decision == "promoted" else "#c62828" if e.decision == "rejected" else "#757575"
        tip = f"{e.time:%Y-%m-%d %H:%M}: v{e.version} {e.decision} (trigger: {e.trigger}) {e.reason}"
        body.append(f'<g><title>{escape(tip)}</title><line x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" '
                    f'y2="{height - BOTTOM}" stroke="{color}" stroke-width="2"/>'
                    f'<text x="{px + 3:.1f}" y="{TOP + 10 + 12 * (index % 2)}" fill="{color}">'
                    f"v{escape(e.version)}</text></g>")  # staggered: two events at one time stay legible
    drift = _drift_chart(points, x)
    legend = ('<div class="legend"><span style="color:#1f77b4">━ metric</span>'
              '<span style="color:#c62828">╌ threshold</span><span style="color:#2e7d32">┃ promoted</span>'
              '<span style="color:#c62828">┃ rejected</span><span style="background:#ffe0b2">&nbsp;trigger fired&nbsp;</span> '
              '<span style="background:#ffcdd2">&nbsp;health problem&nbsp;</span></div>')
    scored = [p for p in points if p.metric is not None]
    summary = (f'<p class="muted">{len(points)} windows, {len(scored)} with data; '
               f"mean {escape(metric)} {_fmt(sum(values) / len(values) if values else None)}; "
               f"{sum(1 for p in points if p.fired)} windows with a trigger fired; {len(events)} retrain events.</p>")
    event_rows = [{"time": f"{e.time:%Y-%m-%d %H:%M}", "version": e.version, "decision": e.decision,
                   "trigger": e.trigger, "reason": e.reason} for e in events]
    return _page(title, _health_box(health) + summary + legend
                 + _svg(height, "".join(body), f"{metric} over time")
                 + "<h2>Drift share against the serving model's training data</h2>" + drift
                 + "<h2>Retrain events</h2>" + _table(event_rows)
                 + "<h2>Versions</h2>" + _table(list(versions)))


def _drift_chart(points: Sequence[WindowPoint], x: _Scale) -> str:
    height = 140
    y = _Scale(0.0, 1.0, height - BOTTOM, TOP)
    body = [_time_axis(x, height), _value_axis(y, "drift share")]
    for p in points:
        if p.drift_share is None:
            continue
        x0, x1 = x(_ts(p.start)), x(_ts(p.end))
        body.append(f'<rect x="{x0:.1f}" y="{y(p.drift_share):.1f}" width="{max(x1 - x0 - 0.5, 0.5):.1f}" '
                    f'height="{y(0.0) - y(p.drift_share):.1f}" fill="#9467bd"><title>'
                    f"{escape(f'{p.start:%Y-%m-%d}: drift share {p.drift_share:.2f}')}</title></rect>")
    return _svg(height, "".join(body), "drift share over time")


def tradeoff_html(*, title: str, metric: str, policies: Sequence[PolicyPoint],
                  series: dict[str, list[tuple[datetime, float | None]]], recommended: str,
                  table_rows: Sequence[dict[str, Any]]) -> str:
    """Retrains (x) against mean metric (y) per policy, the threshold sweep as a curve, error over time."""
    height = 420
    xs = [p.retrains for p in policies] or [0]
    ys = [p.mean_metric for p in policies] or [0.0]
    x = _Scale(0, max(xs) * 1.08 + 1, LEFT, WIDTH - RIGHT)
    y = _Scale(min(ys) * 0.95, max(ys) * 1.05, height - BOTTOM, TOP)
    body = [_value_axis(y, f"mean {metric}")]
    for tick in x.ticks():
        px = x(tick)
        body.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" y2="{height - BOTTOM}" stroke="#eee"/>'
                    f'<text x="{px:.1f}" y="{height - 10}" text-anchor="middle">{_fmt(tick)}</text>')
    body.append(f'<text x="{WIDTH - RIGHT}" y="{TOP + 10}" text-anchor="end">number of retrains →</text>')
    families = sorted({p.family for p in policies})
    colors = {family: PALETTE[i % len(PALETTE)] for i, family in enumerate(families)}
    sweep = sorted((p for p in policies if p.family == "threshold"), key=lambda p: p.retrains)
    if len(sweep) > 1:
        body.append(_polyline(((p.retrains, p.mean_metric) for p in sweep), x, y, colors["threshold"],
                              "absolute threshold sweep"))
    names = [f"{p.name}{' ★' if p.name == recommended else ''}" for p in policies]
    anchors = [(x(p.retrains), y(p.mean_metric)) for p in policies]
    for p, name, (px, py), (lx, ly, end) in zip(policies, names, anchors, place_labels(anchors, names)):
        star = p.name == recommended
        tip = f"{p.name}: {p.retrains} retrains, mean {metric} {_fmt(p.mean_metric)}, p90 {_fmt(p.p90_metric)}"
        anchor = ' text-anchor="end"' if end else ""
        if abs(ly - py) > 20:  # a name pushed away from its point gets a leader line back to it
            body.append(f'<line x1="{px:.1f}" y1="{py:.1f}" x2="{lx:.1f}" y2="{ly - 4:.1f}" stroke="#999" '
                        'stroke-width="0.7"/>')
        body.append(f'<g><title>{escape(tip)}</title><circle cx="{px:.1f}" cy="{py:.1f}" r="{7 if star else 4.5}" '
                    f'fill="{colors[p.family]}" stroke="{"#000" if star else "#fff"}" stroke-width="{2 if star else 1}"/>'
                    f'<text x="{lx:.1f}" y="{ly:.1f}"{anchor}>{escape(name)}</text></g>')
    legend = '<div class="legend">' + "".join(
        f'<span style="color:{colors[f]}">● {escape(f)}</span>' for f in families) + "</div>"
    parts = [legend, _svg(height, "".join(body), "retrains against mean error")]
    if recommended:
        parts.insert(0, f'<div class="ok">Recommended: <b>{escape(recommended)}</b>, the fewest retrains whose mean '
                        f"{escape(metric)} is within the tolerance of the best.</div>")
    if series:
        parts.append(f"<h2>{escape(metric)} over time for selected policies</h2>" + _series_chart(series, metric))
    parts.append("<h2>All policies</h2>" + _table(list(table_rows)))
    return _page(title, "".join(parts))


def place_labels(anchors: Sequence[tuple[float, float]], names: Sequence[str],
                 char_width: float = 6.2, height: float = 12.0) -> list[tuple[float, float, bool]]:
    """Where to write each point's name so that no two names overlap: (x, y, anchored at the end).

    Policies often land close together (a schedule and a threshold with similar retrains and error),
    and names written over each other cannot be read. Greedy: each name takes the first free spot
    around its point (right/left, above/below, then further out), leftmost points first.
    """
    taken = [(px - 5, py - 5, px + 5, py + 5) for px, py in anchors]  # the points themselves
    placed: dict[int, tuple[float, float, bool]] = {}
    offsets = [(7, -6), (7, 14), (-7, -6), (-7, 14), (7, -18), (-7, -18), (7, 26), (-7, 26),
               (14, -30), (-14, -30), (14, 38), (-14, 38), (20, -42), (-20, -42), (20, 50), (-20, 50)]
    for i in sorted(range(len(anchors)), key=lambda i: (anchors[i][0], anchors[i][1])):
        px, py = anchors[i]
        width = char_width * len(names[i])
        for dx, dy in offsets:  # when every spot is taken, the last one is used
            left = px + dx if dx > 0 else px + dx - width
            box = (left, py + dy - height + 2, left + width, py + dy + 2)
            spot = (px + dx, py + dy, dx < 0)
            if left >= 0 and left + width <= WIDTH and not any(_overlap(box, other) for other in taken):
                break
        taken.append(box)
        placed[i] = spot
    return [placed[i] for i in range(len(anchors))]


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _series_chart(series: dict[str, list[tuple[datetime, float | None]]], metric: str) -> str:
    height = 300
    stamps = [_ts(t) for values in series.values() for t, _ in values]
    values = [v for vs in series.values() for _, v in vs if v is not None and math.isfinite(v)]
    if not stamps:
        return '<p class="muted">no windows</p>'
    x = _Scale(min(stamps), max(stamps), LEFT, WIDTH - RIGHT)
    y = _Scale(0.0, max(values, default=1.0) * 1.08, height - BOTTOM, TOP)
    body = [_time_axis(x, height), _value_axis(y, metric)]
    legend = []
    for i, (name, points) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        body.append(_polyline(((_ts(t), v) for t, v in points), x, y, color, name))
        legend.append(f'<span style="color:{color}">━ {escape(name)}</span>')
    return '<div class="legend">' + "".join(legend) + "</div>" + _svg(height, "".join(body), f"{metric} over time")
