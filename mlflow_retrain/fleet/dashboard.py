"""The fleet's dashboard: one self-contained HTML page, one row per model, each linking to the model's
own monitoring dashboard (written beside it by `fleet monitor`) and, on a tracking server, to its
page in the MLflow UI, which stays the place for detail.

One chart answers the question a fleet raises ("which models are close to retraining?") on a scale
every model shares: its newest window's metric as a share of its `metric_threshold` trigger, turned so
that above 1 is past the limit for errors and scores alike.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import plotly.graph_objects as go

from mlflow_retrain.usecases.charts import CONFIG, STYLE, THRESHOLD_COLOR
from mlflow_retrain.measure.names import higher_is_better
from mlflow_retrain.fleet.task import FleetResult, Row

OK_COLOR, BAD_COLOR = "#2e7d32", "#c62828"
FLEET_STYLE = ".num{text-align:right;font-variant-numeric:tabular-nums} td.reason{max-width:520px}"


def pressure(row: Row) -> float | None:
    """The newest metric against the trigger's limit, above 1 when past it: metric / max for an error,
    min / metric for a score. None without a limit, a metric, or with a score at or below 0."""
    if row.threshold is None or row.last_metric is None or row.metric is None:
        return None
    if higher_is_better(row.metric):
        return row.threshold / row.last_metric if row.last_metric > 0 else None
    return row.last_metric / row.threshold if row.threshold > 0 else None


def pressure_figure(rows: list[Row]) -> go.Figure | None:
    shown = [(r, p) for r in rows if (p := pressure(r)) is not None]
    if not shown:
        return None
    shown.sort(key=lambda pair: pair[1])
    fig = go.Figure(go.Bar(
        x=[p for _, p in shown], y=[escape(r.model) for r, _ in shown], orientation="h",
        marker_color=[BAD_COLOR if p > 1 or r.exit_code else OK_COLOR for r, p in shown],
        hovertext=[f"{escape(r.model)}: {escape(r.metric or '')} {r.last_metric:.4g}, limit {r.threshold:.4g} "
                   f"({escape(r.outcome)})" for r, _ in shown], hoverinfo="text"))
    fig.add_vline(x=1, line_color=THRESHOLD_COLOR, line_dash="dash")
    fig.update_layout(template="plotly_white", height=120 + 22 * len(shown), margin={"l": 20, "r": 20, "t": 30, "b": 40},
                      xaxis_title="newest window's metric / its metric_threshold limit (above 1: past the limit)",
                      yaxis={"automargin": True})
    return fig


def _link(href: str | None, text: str) -> str:
    return f'<a href="{escape(href)}">{escape(text)}</a>' if href else escape(text)


def _cells(row: Row, out_dir: Path) -> list[tuple[str, str]]:
    own = None
    if row.dashboard:
        own = Path(row.dashboard).resolve().relative_to(out_dir.resolve()).as_posix()
    metric = "" if row.last_metric is None else f"{row.metric} {row.last_metric:.4g}"
    return [("model", _link(own, row.model)), ("production", escape(f"v{row.production}" if row.production else "-")),
            ("age", escape(row.age or "-")), ("last metric", escape(metric)), ("decision", escape(row.outcome)),
            ("reason", escape(row.reason)), ("MLflow", _link(row.ui, "model page") if row.ui else ""),
            ("policy", escape(row.policy))]


def dashboard_html(result: FleetResult, out_dir: Path) -> str:
    rows = result.rows
    header = "".join(f"<th>{name}</th>" for name, _ in _cells(rows[0], out_dir)) if rows else ""
    body = "".join("<tr>" + "".join(f'<td class="{name}">{cell}</td>' for name, cell in _cells(r, out_dir)) + "</tr>"
                   for r in rows)
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(result.counts().items())) or "no models"
    box = "ok" if result.exit_code == 0 else "bad"
    figure = pressure_figure(rows)
    chart = "" if figure is None else ("<h2>How close each model is to its retrain threshold</h2>"
                                       + figure.to_html(full_html=False, include_plotlyjs=True, config=CONFIG,
                                                        div_id="pressure"))
    left_out = (f'<p class="muted">Not selected by --select: {escape(", ".join(result.not_selected))}</p>'
                if result.not_selected else "")
    title = f"mlflow-retrain fleet: {len(rows)} models"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}{FLEET_STYLE}</style></head><body><h1>{escape(title)}</h1>"
            f'<div class="{box}">{escape(counts)}; exit {result.exit_code}</div>'
            '<p class="muted">Each model links to its own monitoring dashboard; its versions, runs and reports are '
            "in the MLflow UI.</p>" + chart + f"<h2>Models</h2><table><tr>{header}</tr>{body}</table>{left_out}"
            "</body></html>\n")


def write_dashboard(result: FleetResult, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "dashboard.html"
    path.write_text(dashboard_html(result, out_dir), encoding="utf-8")
    return path

