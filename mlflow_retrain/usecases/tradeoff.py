"""The backtest's report: one self-contained HTML page (`charts.py` says how pages are built) with
retrains against mean metric per policy, the metric and the retrains over time, the walk-forward view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any, Sequence

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from mlflow_retrain.decide import format_span
from mlflow_retrain.usecases.charts import (DECISION_STYLE, FIRED_COLOR, METRIC_COLOR, figure_div, html_page, html_table,
                                            midpoint, padded_range, short_number, short_time)

# One colour per policy, in the order the policies are listed (the backtest's table order); shared
# by every backtest figure. 24 distinct colours, more policies than that wrap around.
POLICY_PALETTE = qualitative.Dark24


@dataclass(frozen=True)
class PolicyPoint:
    """One backtested policy on the trade-off chart."""

    name: str
    family: str
    retrains: int
    mean_metric: float
    p90_metric: float
    promoted: int = 0
    rejected: int = 0


def policy_colors(names: Sequence[str]) -> dict[str, str]:
    """Policy name -> colour, by position in `names` (first seen first): one mapping for a whole report."""
    ordered = list(dict.fromkeys(names))
    return {name: POLICY_PALETTE[i % len(POLICY_PALETTE)] for i, name in enumerate(ordered)}


def tradeoff_figure(*, metric: str, policies: Sequence[PolicyPoint], recommended: str,
                    colors: dict[str, str]) -> go.Figure:
    """Retrains (x) against mean metric (y), a marker per policy (a star for the recommended one),
    the threshold sweep joined as a curve; names are in the legend and the hover, not on the plot."""
    fig = go.Figure()
    sweep = sorted((p for p in policies if p.family == "threshold"), key=lambda p: (p.retrains, p.mean_metric))
    if len(sweep) > 1:
        fig.add_trace(go.Scatter(x=[p.retrains for p in sweep], y=[p.mean_metric for p in sweep], mode="lines",
                                 name="threshold sweep", hoverinfo="skip",
                                 line={"color": "#9e9e9e", "dash": "dash", "width": 1.2}))
    for p in policies:
        star = p.name == recommended
        fig.add_trace(go.Scatter(
            x=[p.retrains], y=[p.mean_metric], mode="markers", name=escape(p.name) + (" ★" if star else ""),
            legendgroup=p.name, marker={"color": colors[p.name], "symbol": "star" if star else "circle",
                                        "size": 18 if star else 11, "line": {"width": 1.5 if star else 0.5,
                                                                             "color": "#000" if star else "#fff"}},
            hovertext=[f"<b>{escape(p.name)}</b>{' (recommended)' if star else ''}<br>{p.retrains} retrains "
                       f"({p.promoted} promoted, {p.rejected} rejected)<br>mean {escape(metric)} "
                       f"{short_number(p.mean_metric)}, p90 {short_number(p.p90_metric)}"], hoverinfo="text"))
    fig.update_layout(template="plotly_white", height=460, margin={"l": 60, "r": 20, "t": 30, "b": 50},
                      xaxis_title="number of retrains", yaxis_title=f"mean {escape(metric)}", hovermode="closest")
    return fig


def series_figure(*, metric: str, series: dict[str, list[tuple[datetime, datetime, float | None]]],
                  retrains: dict[str, list[tuple[datetime, str]]], visible: Sequence[str],
                  colors: dict[str, str]) -> go.Figure:
    """The metric per window for every policy (those in `visible` drawn, the others one legend click
    away), and below it each policy's retrains on its own lane, promoted and rejected by symbol."""
    names = list(dict.fromkeys([*series, *retrains]))
    lanes = max(len(names), 1)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        row_heights=[0.65, 0.35] if lanes > 6 else [0.78, 0.22])
    for name in names:
        shown = True if name in visible else "legendonly"
        color = colors[name]
        windows = series.get(name, [])
        # a point per window at its start, the length once in the hover: every policy's windows in a
        # year of daily steps stay a few hundred kB
        length = format_span(windows[0][1] - windows[0][0]) if windows else ""
        fig.add_trace(go.Scatter(
            x=[short_time(a) for a, _, _ in windows], y=[float(f"{v:.6g}") if v is not None and math.isfinite(v) else None
                                                    for _, _, v in windows],
            mode="lines", name=escape(name), legendgroup=name, visible=shown, connectgaps=False,
            line={"color": color, "width": 1.5},
            hovertemplate=f"<b>{escape(name)}</b><br>window %{{x|%Y-%m-%d %H:%M}} + {length}<br>{escape(metric)} "
                          "%{y:.4g}<extra></extra>"), row=1, col=1)
        for decision in ("promoted", "rejected"):
            moments = [t for t, d in retrains.get(name, []) if d == decision]
            if not moments:
                continue
            fig.add_trace(go.Scatter(
                x=[f"{t:%Y-%m-%d %H:%M:%S}" for t in moments], y=[escape(name)] * len(moments), mode="markers",
                name=f"{escape(name)} {decision}", legendgroup=name, showlegend=False, visible=shown,
                marker={"color": color, "symbol": DECISION_STYLE[decision][1], "size": 8,
                        "line": {"width": 1.2, "color": color}},
                customdata=[[short_time(t)] for t in moments],
                hovertemplate=f"<b>{escape(name)}</b><br>retrain at %{{customdata[0]}}: {decision}<extra></extra>"),
                row=2, col=1)
    stamps = [t for w in series.values() for a, b, _ in w for t in (a, b)] + [t for r in retrains.values() for t, _ in r]
    if stamps:
        fig.update_xaxes(range=padded_range(min(stamps), max(stamps)), type="date")
    fig.update_yaxes(title_text=escape(metric), rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="retrains (▲ promoted, ✕ rejected)", type="category", categoryorder="array",
                     categoryarray=[escape(n) for n in reversed(names)], row=2, col=1)
    fig.update_layout(template="plotly_white", height=420 + 22 * lanes, hovermode="closest",
                      margin={"l": 60, "r": 20, "t": 30, "b": 40})
    return fig


def tradeoff_figures(*, metric: str, policies: Sequence[PolicyPoint],
                     series: dict[str, list[tuple[datetime, datetime, float | None]]], recommended: str,
                     retrains: dict[str, list[tuple[datetime, str]]] | None = None,
                     visible: Sequence[str] | None = None) -> tuple[go.Figure, go.Figure]:
    """The trade-off and the over-time figure, coloured from one policy -> colour mapping."""
    retrains = retrains or {}
    colors = policy_colors([*(p.name for p in policies), *series, *retrains])
    return (tradeoff_figure(metric=metric, policies=policies, recommended=recommended, colors=colors),
            series_figure(metric=metric, series=series, retrains=retrains,
                          visible=list(series) if visible is None else visible, colors=colors))


@dataclass(frozen=True)
class FoldPoint:
    """One walk-forward fold: its windows' span and the policy chosen on the windows before it."""

    start: datetime
    end: datetime
    chosen: str
    mean_metric: float


def walk_forward_figure(*, metric: str, rows: Sequence[dict[str, Any]], folds: Sequence[FoldPoint],
                        recommended: str) -> go.Figure:
    """In sample against out of sample: each policy's mean over the whole history and over the
    out-of-sample windows, the walk-forward rule's own out-of-sample mean beside them (top); which
    policy each fold ran, and its mean there (bottom)."""
    fig = make_subplots(rows=2, cols=1, row_heights=[0.65, 0.35], vertical_spacing=0.16,
                        subplot_titles=(f"mean {metric}: whole history vs out of sample",
                                        "walk-forward: the policy each fold ran (chosen on the windows before it)"))
    replayed = [r for r in rows if r.get("mean_metric") is not None and not math.isnan(r["mean_metric"])]
    names = [escape(r["policy"]) + (" ★" if r["policy"] == recommended else "") for r in replayed]
    fig.add_trace(go.Bar(x=names, y=[r["mean_metric"] for r in replayed], name="whole history (in sample)",
                         marker={"color": "#9aa7b4"},
                         hovertext=[f"{r['retrains']} retrains" for r in replayed], hoverinfo="x+y+text"), row=1, col=1)
    forward = [r for r in rows if r.get("family") == "walk_forward"]
    fig.add_trace(go.Bar(x=names + ["walk-forward"] * len(forward),
                         y=[r.get("oos_mean_metric") for r in replayed] + [r["oos_mean_metric"] for r in forward],
                         name="out of sample", marker={"color": [METRIC_COLOR] * len(replayed)
                                                                 + [FIRED_COLOR] * len(forward)},
                         hovertext=[f"{r.get('oos_retrains')} retrains" for r in [*replayed, *forward]],
                         hoverinfo="x+y+text"), row=1, col=1)
    colors = policy_colors(sorted({f.chosen for f in folds}))
    for f in folds:
        fig.add_trace(go.Bar(x=[midpoint(f.start, f.end)], y=[f.mean_metric], width=[(f.end - f.start).total_seconds() * 1000],
                             name=escape(f.chosen), legendgroup=f.chosen, marker={"color": colors[f.chosen]},
                             showlegend=f.chosen not in {g.chosen for g in folds[:folds.index(f)]},
                             hovertext=f"{short_time(f.start)}..{short_time(f.end)}: {escape(f.chosen)}, mean {short_number(f.mean_metric)}",
                             hoverinfo="text"), row=2, col=1)
    fig.update_layout(barmode="group", height=620, margin={"t": 60, "l": 60, "r": 20, "b": 40})
    fig.update_yaxes(title_text=metric, row=1, col=1)
    fig.update_yaxes(title_text=metric, row=2, col=1)
    return fig


def tradeoff_html(*, title: str, metric: str, policies: Sequence[PolicyPoint],
                  series: dict[str, list[tuple[datetime, datetime, float | None]]], recommended: str,
                  table_rows: Sequence[dict[str, Any]], retrains: dict[str, list[tuple[datetime, str]]] | None = None,
                  visible: Sequence[str] | None = None, folds: Sequence[FoldPoint] = ()) -> str:
    """The backtest report: retrains against mean metric per policy, error and retrains over time, the
    walk-forward view when there are folds, the table.

    `series` is each policy's metric per (window start, window end); `retrains` its retrains as
    (time, promoted|rejected); `visible` the policies drawn at first (all of them by default).
    """
    trade, over_time = tradeoff_figures(metric=metric, policies=policies, series=series, recommended=recommended,
                                        retrains=retrains, visible=visible)
    parts = []
    if recommended:
        parts.append(f'<div class="ok">Recommended: <b>{escape(recommended)}</b>, the fewest retrains whose mean '
                     f"{escape(metric)} is within the tolerance of the best or not distinguishable from it.</div>")
    parts.append(f"<h2>Retrains against mean {escape(metric)}</h2>" + figure_div(trade, "tradeoff", first=True))
    if series or retrains:
        parts.append(f"<h2>{escape(metric)} and retrains over time</h2><p class=\"muted\">Click a policy in the "
                     "legend to show or hide it.</p>" + figure_div(over_time, "over-time", first=False))
    if folds:
        parts.append("<h2>Walk-forward: the choice scored where it was not made</h2><p class=\"muted\">Each fold "
                     "runs the policy the same rule picks on the windows before it; a policy's out-of-sample bar is "
                     "its mean over the same windows.</p>"
                     + figure_div(walk_forward_figure(metric=metric, rows=table_rows, folds=folds,
                                                      recommended=recommended), "walk-forward", first=False))
    parts.append("<h2>All policies</h2>" + html_table(list(table_rows)))
    return html_page(title, "".join(parts))
