"""The model's error over time: per window, the model that was in Production *then*, plus health.

Seeing the error at the frequency that matters is the first step of automatic retraining: it shows
how fast the model degrades, how often retraining makes sense, and failures that are not error at
all (a model that will not load, labels that stopped arriving, slow predictions).

Fast by construction: the data is read once, each version is loaded once and predicts its whole
span in one call, drift uses `DriftMeter` (Evidently's statistics with the reference prepared once
per version), and the per-window numbers are group-bys over those arrays.
"""

from __future__ import annotations

import logging
import tempfile
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlflow_retrain.base import tags as T
from mlflow_retrain.usecases.charts import RetrainEvent, WindowPoint, dashboard_html
from mlflow_retrain.policy.config import Config
from mlflow_retrain.adapters.data import LabelledData, Window, parse_time
from mlflow_retrain.decide import Observations, WindowScore, format_span
from mlflow_retrain.decide.triggers import fires_always
from mlflow_retrain.usecases.monitor_challenger import challenger_windows
from mlflow_retrain.decide.words import moment, span_in, unit_for
from mlflow_retrain.usecases.monitor_estimate import estimate_windows
from mlflow_retrain.measure.drift import ColumnDrift, DriftMeter, summarize
from mlflow_retrain.base.errors import ConfigError, DataError, HealthError
from mlflow_retrain.loop.evaluate import load_reference, registered, score_predictions
from mlflow_retrain.adapters.registry import Registry, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Promotion:
    """From `time` on (data time), `version` served."""

    time: pd.Timestamp
    version: str


@dataclass
class MonitoredWindow(WindowPoint):
    """A window of the span; `partial` for the newest one when the span does not end on a window
    boundary: shown (it is the freshest number there is), but its labels are still arriving, so it
    is never judged as a whole window (no data-gap check at its end, no trigger marks)."""

    partial: bool = False


@dataclass
class MonitorResult:
    points: list[MonitoredWindow]
    events: list[RetrainEvent]
    health: list[str]
    dashboard: Path
    table: Path
    run_id: str | None = None
    seconds: float = 0.0
    reports: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # a trigger that fired on every window (`fires_always`)

    @property
    def healthy(self) -> bool:
        return not self.health

    def rows(self) -> list[dict[str, Any]]:
        """One row per window; per measured feature its drift score (`drift.<column>`, the test's own
        scale: a p-value or a distance) and, in `drifted`, the features whose test said drift."""
        return [{"start": p.start.isoformat(), "end": p.end.isoformat(), "version": p.version, "rows": p.rows,
                 "metric": p.metric, "estimate": p.estimate, "challenger": p.challenger,
                 "challenger_version": p.challenger_version, "partial": p.partial, "drift_share": p.drift_share, "latency_ms": p.latency_ms,
                 "fired": ",".join(p.fired), "health": "; ".join(p.health),
                 "drifted": ",".join(c.column for c in p.drift_columns if c.drifted),
                 **{f"drift.{c.column}": c.score for c in p.drift_columns}} for p in self.points]

    def to_dict(self) -> dict[str, Any]:
        return {"windows": self.rows(), "health": self.health, "dashboard": str(self.dashboard),
                "table": str(self.table), "run_id": self.run_id, "seconds": self.seconds, "warnings": self.warnings,
                "events": [e.__dict__ | {"time": e.time.isoformat()} for e in self.events]}


def production_timeline(config: Config, registry: Registry) -> tuple[list[Promotion], list[RetrainEvent]]:
    """Who served when, from the controller's audit runs and the versions' promotion tags.

    Audit runs give every promotion in the order it was made (a version promoted twice, by a
    rollback, appears twice), each at its run's `as_of`: data time for cycles and, like the
    versions' `retrain.promoted_at`, for moves by hand. A version promoted outside the controller (a
    first `train`, placed at its `retrain.as_of`) comes from `retrain.promoted_at`; once a later run
    has promoted it again (a rollback to it) that tag holds the later time, and its first service is
    known because an audit run named it as Production before any run promoted it. Wall-clock stamps
    (`retrain.promoted_wall`, a version's creation) are never read: on the data's time axis they
    would put a promotion years off. Moves made at the same data time (a promotion, then its
    rollback, both at the newest row) keep their order, so the last one made is the one serving.
    """
    import mlflow

    from mlflow_retrain.loop.reconcile import controller_experiment

    promotions: list[Promotion] = []
    events: list[RetrainEvent] = []
    experiment = mlflow.get_experiment_by_name(controller_experiment(config))
    runs = [] if experiment is None else mlflow.search_runs(
        experiment_ids=[experiment.experiment_id], output_format="list", max_results=50_000,
        order_by=["attributes.start_time ASC"])
    seen: set[str] = set()  # promoted by an audit run
    placed: set[str] = set()  # in Production before any audit run promoted it
    for run in runs:
        tags = run.data.tags
        as_of, candidate, outcome = tags.get(T.AS_OF), tags.get("candidate_version"), tags.get("outcome", "")
        serving_then = tags.get("production_version")
        if serving_then and serving_then not in seen:
            placed.add(serving_then)
        if not (as_of and candidate):
            continue
        when = naive(as_of)
        promoted = outcome in (T.PROMOTED, "promote", "rollback")
        if promoted:
            promotions.append(Promotion(when, candidate))
            seen.add(candidate)
        events.append(RetrainEvent(time=when.to_pydatetime(), version=candidate,
                                   decision=T.PROMOTED if promoted else (T.REJECTED if outcome == T.REJECTED else outcome),
                                   trigger=tags.get("triggers_fired", outcome), reason=tags.get("reason", "")))
    for version in registry.versions():
        if version.version not in seen and T.PROMOTED_AT in version.tags:
            promotions.append(Promotion(naive(version.tags[T.PROMOTED_AT]), version.version))
        elif version.version in seen and version.version in placed and T.AS_OF in version.tags:
            promotions.append(Promotion(naive(version.tags[T.AS_OF]), version.version))
    promotions.sort(key=lambda p: p.time)  # stable: same-time moves stay in the order they were made
    events.sort(key=lambda e: e.time)
    return promotions, events


def naive(stamp: str) -> pd.Timestamp:
    """Data time is naive; an aware stamp (a move by hand in a store written before moves carried
    data time) is converted from UTC, the zone the data's naive stamps are taken to be in."""
    value = pd.Timestamp(stamp)
    return value.tz_convert("UTC").tz_localize(None) if value.tzinfo is not None else value


def serving(promotions: list[Promotion], at: pd.Timestamp) -> str | None:
    """The version in Production at time `at`: the last one promoted at or before it."""
    index = bisect_right([p.time for p in promotions], at)
    return promotions[index - 1].version if index else None


def spans(start: pd.Timestamp, end: pd.Timestamp, every: timedelta) -> list[Window]:
    """Whole windows of `every` from `start`, then the newest, partial one up to `end` if the span
    does not end on a boundary: dropping it would hide the freshest rows (up to a window of them)."""
    step = pd.Timedelta(every)
    count = int((end - start) / step)
    if count < 1:
        raise DataError(f"the span {start.isoformat()}..{end.isoformat()} is shorter than one window of "
                        f"{format_span(every)}; widen --from/--to or shorten --every")
    whole = [Window(start + step * i, start + step * (i + 1)) for i in range(count)]
    return whole + ([Window(whole[-1].end, end)] if whole[-1].end < end else [])


class _Models:
    """Each version loaded once; a version that cannot load is remembered as downtime, not retried."""

    def __init__(self, config: Config, data: LabelledData):
        self.config, self.data = config, data
        self.loaded: dict[str, Any] = {}
        self.meters: dict[str, DriftMeter | None] = {}
        self.errors: dict[str, str] = {}

    def get(self, version: str) -> Any:
        if version not in self.loaded and version not in self.errors:
            try:
                self.loaded[version] = registered(self.config, self.data, version)
            except Exception as exc:  # any failure to load is downtime to report, whatever its type
                self.errors[version] = f"model_unloadable: v{version} cannot be loaded ({type(exc).__name__}: {exc})"[:300]
        return self.loaded.get(version)

    def meter(self, version: str, run_id: str) -> DriftMeter | None:
        if version not in self.meters:
            try:
                self.meters[version] = DriftMeter(load_reference(run_id), self.data.spec)
            except ConfigError:  # monitoring.drift naming a column the data does not have: the user's to fix
                raise
            except Exception as exc:  # no reference: drift unknown, the error series still stands
                log.warning("no drift reference for v%s: %s", version, exc)
                self.meters[version] = None
        return self.meters[version]


def run_monitor(config: Config, *, data: LabelledData | None = None, start: str | None = None,
                end: str | None = None, every: timedelta | None = None, out_dir: Path | None = None,
                log_run: bool = True, with_reports: bool = False, now: pd.Timestamp | None = None) -> MonitorResult:
    """Score every window of the span with the model that served it; write the dashboard.

    Without `end` this is a live run: the windows reach the newest row, and the span ends at the
    clock (`now`, naive UTC as the data's stamps), so labels that stopped arriving are downtime. With
    `end` it is a replay ending there, and labels are judged as of `end`.
    """
    started = time.perf_counter()
    data = data or LabelledData.load(config)
    every = every or config.monitoring.window
    registry = Registry(config)
    registry.require()
    promotions, events = production_timeline(config, registry)
    if not promotions:
        raise DataError(f"model {config.model_name!r} has never been in Production; nothing to monitor yet")
    first = promotions[0].time if start is None else data.resolve_as_of(start, "--from")
    last = data.last_labelled if end is None else parse_time(end, "--to")
    if end is not None and last < data.first:
        raise DataError(f"--to {end} is before the data starts ({data.first.isoformat()})")
    windows = spans(first, last, every)
    runs = {v.version: v.run_id for v in registry.versions()}
    models = _Models(config, data)
    points = _score(config, data, windows, pd.Timedelta(every), promotions, models, runs)
    estimate_windows(config, data, points, models, registry.versions())
    challenger_windows(config, data, points, models, registry.versions())
    clock = now if now is not None else pd.Timestamp(utcnow()).tz_localize(None)
    health = _health(config, data, points, clock if end is None else last)
    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="mlflow-retrain-monitor-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / "monitor.csv"
    result = MonitorResult(points, events, health, out_dir / "dashboard.html", table)
    judged = [p for p in points if not p.partial and p.metric is not None]  # the windows the triggers marked
    triggers = config.triggers.configured
    result.warnings = fires_always(triggers, {t.name: [t.name in p.fired for p in judged] for t in triggers})
    pd.DataFrame(result.rows()).to_csv(table, index=False)
    if with_reports:
        result.reports = _reports(config, data, result, models, runs, out_dir)
    result.dashboard.write_text(dashboard_html(
        title=f"{config.model_name}: {config.metric} per {format_span(every)} window",
        metric=config.metric, points=points, threshold=config.threshold_limit,
        events=[e for e in events if first <= pd.Timestamp(e.time) <= last],
        versions=[{"version": v.version, "stage": v.stage, "trigger": v.tags.get(T.TRIGGER, ""),
                   "decision": v.tags.get(T.DECISION, ""), "reason": v.tags.get(T.REASON, ""),
                   "train_window": v.tags.get(T.TRAIN_WINDOW, "")} for v in registry.versions()],
        health=health,
    ))
    result.seconds = time.perf_counter() - started
    if log_run:
        result.run_id = _log(config, result, every)
    return result


def _score(config: Config, data: LabelledData, windows: list[Window], every: pd.Timedelta,
           promotions: list[Promotion], models: _Models, runs: dict[str, str]) -> list[MonitoredWindow]:
    """One predict call per version over all the windows it served in a chunk, then per-window
    group-bys. A dataset read by windows comes in chunks of bounded size (`LabelledData.slabs`): the
    monitor's memory is a chunk's, not the history's, and the trigger history runs on across chunks."""
    owners = [serving(promotions, w.start) for w in windows]
    points = []
    depth = max((t.depth for t in config.triggers.configured), default=1)
    served: list[WindowScore] = []  # the whole windows the serving version has scored so far, in order
    for chunk, slab in data.slabs(windows):
        bounds, predictions, failures = _predict(slab, [windows[i] for i in chunk], [owners[i] for i in chunk],
                                                 models)
        drifts: dict[str, Any] = {}  # per version: the chunk's rows prepared once for its drift meter
        for k, i in enumerate(chunk):
            window, (lo, hi), version = windows[i], bounds[k], owners[i]
            partial = window.end - window.start < every
            metric = drift = latency = None
            fired: list[str] = []
            columns: list[ColumnDrift] = []
            health = [failures[k]] if k in failures else []  # a model that fails is down, window whole or not
            if i == 0 or owners[i - 1] != version:
                served = []
            if k in predictions and hi > lo:
                rows = slab.frame.iloc[lo:hi]
                pred, proba, latency = predictions[k]
                metric = score_predictions(config, slab, rows, pred, proba).metrics.get(config.metric)
                meter = models.meter(version, runs.get(version, "")) if version else None
                if meter and version not in drifts:
                    drifts[version] = meter.sliced(slab.frame)
                columns = drifts[version](lo, hi) if meter else []
                measured = summarize(columns) if meter else None
                drift = measured.drift_share if measured else None
                if not partial:  # a trigger judges a whole window; the cycle never sees this partial one
                    served.append(WindowScore(window.iso(), hi - lo, metric))
                    fired = marks(config, window, served[-depth:], measured)
                if config.monitoring.max_latency_ms is not None and latency > config.monitoring.max_latency_ms:
                    health.append(f"slow: {latency:.0f} ms > {config.monitoring.max_latency_ms:.0f} ms")
            elif not partial:
                served.append(WindowScore(window.iso(), hi - lo, None))  # a gap in the history, never a zero
            points.append(MonitoredWindow(start=window.start.to_pydatetime(), end=window.end.to_pydatetime(),
                                          metric=metric, rows=hi - lo, drift_share=drift, latency_ms=latency,
                                          version=version, fired=fired, health=health, partial=partial,
                                          drift_columns=columns))
    return points


def _predict(data: LabelledData, windows: list[Window], owners: list[str | None], models: _Models
             ) -> tuple[list[tuple[int, int]], dict[int, tuple[np.ndarray, np.ndarray | None, float]], dict[int, str]]:
    """Each window's rows in `data.frame`, and per window the predictions of the version that served
    it (one predict call per version), or why it could not predict."""
    bounds = [data.positions(w) for w in windows]
    by_version: dict[str, list[int]] = {}
    for i, version in enumerate(owners):
        if version is not None:
            by_version.setdefault(version, []).append(i)
    predictions: dict[int, tuple[np.ndarray, np.ndarray | None, float]] = {}
    failures: dict[int, str] = {}
    for version, indexes in by_version.items():
        model = models.get(version)
        if model is None:
            for i in indexes:
                failures[i] = models.errors[version]
            continue
        positions = np.concatenate([np.arange(*bounds[i]) for i in indexes])
        if not len(positions):
            continue
        rows = data.frame.iloc[positions]
        begun = time.perf_counter()
        try:
            pred, proba = model.predict_with_proba(rows)
        except Exception as exc:  # a model that loads but cannot predict is downtime
            for i in indexes:
                failures[i] = f"predict_failed: v{version} ({type(exc).__name__}: {exc})"[:300]
            continue
        per_row_ms = (time.perf_counter() - begun) * 1000 / len(positions)
        offset = 0
        for i in indexes:
            n = bounds[i][1] - bounds[i][0]
            predictions[i] = (pred[offset:offset + n], None if proba is None else proba[offset:offset + n],
                              per_row_ms * n)
            offset += n
    return bounds, predictions, failures


def marks(config: Config, window: Window, scores: list[WindowScore], drift: Any) -> list[str]:
    """The configured triggers the newest of `scores` crosses, as each trigger's own `mark` says.

    `scores` are the windows the serving version scored, oldest first, up to the deepest trigger's
    `depth`: a trigger that reads a history (`metric_trend`) sees the windows the cycle would have
    read, none served by another version (after a promotion the history starts again, as a cycle
    blanks the new version's in-sample windows)."""
    seen = Observations(metric=config.metric, higher_is_better=config.higher_is_better, as_of=window.end,
                        scores=tuple(scores), drift=drift)
    return [t.name for t in config.triggers.configured if t.mark(seen)]


def _health(config: Config, data: LabelledData, points: list[MonitoredWindow], span_end: pd.Timestamp) -> list[str]:
    """Downtime across the span: unloadable/failing models, slow windows, and labels that stopped.

    Labels are checked at the end of every whole window and at `span_end`: the windows stop at the
    newest row (or `--to`), so without the second check labels that stopped arriving after the last
    whole window would never show. The partial window is not checked at its own end (its labels are
    still coming); a gap at the span's end is the span's issue, not that window's.
    """
    issues = dict.fromkeys(sorted({issue for p in points for issue in p.health}))
    gap, unit = config.monitoring.max_data_gap, unit_for(config.monitoring.window)
    if gap is not None:
        for point in points:
            message = None if point.partial else _data_gap(data, pd.Timestamp(point.end), gap, unit)
            if message:
                point.health.append(message)
                issues[message] = None
        message = _data_gap(data, span_end, gap, unit)
        if message:
            issues[message] = None
    return list(issues)


def _data_gap(data: LabelledData, at: pd.Timestamp, gap: timedelta, unit: str) -> str | None:
    """A data_gap issue when the newest label at or before `at` is older than `gap` (or none exists),
    said in the policy's `unit` (`decide.words`)."""
    newest = data.newest(at)
    if newest is not None and at - newest <= pd.Timedelta(gap):
        return None
    if newest is None:
        return f"data_gap: no labelled data at all by {moment(at, unit)} (max {span_in(gap, unit)})"
    return (f"data_gap: no labelled data for {span_in(at - newest, unit)} by {moment(at, unit)}, the newest as of "
            f"{moment(newest, unit)} (max {span_in(gap, unit)})")


def _reports(config: Config, data: LabelledData, result: MonitorResult, models: _Models, runs: dict[str, str],
             out_dir: Path) -> list[str]:
    """Evidently's own reports for each window where something fired, to drill into it."""
    from mlflow_retrain.adapters.reports import PREDICTION, drift_report, quality_report

    written = []
    for point in result.points:
        if not (point.fired or point.health) or point.version is None or point.rows == 0:
            continue
        model = models.get(point.version)
        if model is None:
            continue
        rows = data.cut(Window(pd.Timestamp(point.start), pd.Timestamp(point.end)))
        folder = out_dir / "reports" / pd.Timestamp(point.end).strftime("%Y%m%dT%H%M")
        folder.mkdir(parents=True, exist_ok=True)
        drift_report(load_reference(runs[point.version]), rows, data.spec, folder / "data_drift.html", config=config, version=point.version, window=Window(pd.Timestamp(point.start), pd.Timestamp(point.end)))
        quality_report(rows.assign(**{PREDICTION: model.predict(rows)}), data.spec, config.task,
                       folder / "model_quality.html", config=config, version=point.version, window=Window(pd.Timestamp(point.start), pd.Timestamp(point.end)))
        written += [str(folder / "data_drift.html"), str(folder / "model_quality.html")]
    return written


def _log(config: Config, result: MonitorResult, every: timedelta) -> str:
    """One run per call; step = window index, timestamp = window end, so MLflow charts the series."""
    import mlflow
    from mlflow.entities import Metric

    from mlflow_retrain.adapters.tracking import start_run

    with start_run(f"{config.experiment}-monitor", "monitor",
                   {T.RUN_KIND: "monitor", "model_name": config.model_name,
                    "healthy": str(result.healthy).lower()}) as run:
        mlflow.log_params({"windows": len(result.points), "every": format_span(every),
                           "from": result.points[0].start.isoformat(), "to": result.points[-1].end.isoformat()})
        metrics = []
        for step, p in enumerate(result.points):
            stamp = int(pd.Timestamp(p.end).timestamp() * 1000)
            for key, value in ((config.metric, p.metric), ("drift_share", p.drift_share), ("rows", p.rows),
                               ("latency_ms", p.latency_ms), ("healthy", float(not p.health))):
                if value is not None and np.isfinite(value):
                    metrics.append(Metric(key, float(value), stamp, step))
        client = mlflow.MlflowClient()
        for chunk in range(0, len(metrics), 1000):
            client.log_batch(run.info.run_id, metrics=metrics[chunk:chunk + 1000])
        mlflow.log_artifact(str(result.table))
        mlflow.log_artifact(str(result.dashboard))
        for path in result.reports:
            mlflow.log_artifact(path, "reports/" + Path(path).parent.name)
        if result.health:
            mlflow.log_dict({"health": result.health}, "health.json")
        return run.info.run_id


def raise_if_unhealthy(result: MonitorResult) -> None:
    """CI alerting: downtime anywhere in the span is a distinct exit code."""
    if result.health:
        raise HealthError(f"{len(result.health)} health issue(s), first: {result.health[0]} (dashboard: {result.dashboard})")
