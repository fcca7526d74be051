"""Steps 1-3 of a cycle: what the registry holds, Production's numbers on the newest windows, and
the plan (`decide.plan`): carry out a sign-off, validate a pending candidate, bootstrap, retrain, or
nothing. A dry run (`check`) stops here; a cycle carries the plan out (`cycle.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mlflow_retrain.adapters.data import LabelledData, Window
from mlflow_retrain.adapters.models import Scorer
from mlflow_retrain.adapters.registry import Registry, VersionInfo, utcnow
from mlflow_retrain.adapters.registry.repair import examine
from mlflow_retrain.adapters.trainers import PROJECT
from mlflow_retrain.base import tags as T
from mlflow_retrain.base.errors import RetrainError
from mlflow_retrain.decide import RetrainDecision, WindowScore, assess, monitoring_depth, recent_windows
from mlflow_retrain.measure.columns import DriftNumbers
from mlflow_retrain.decide.invariants import STAGE_PENDING
from mlflow_retrain.decide.plan import ASSESS, BOOTSTRAP, SIGN_OFF, Plan, Staged, first_step, plan
from mlflow_retrain.loop.evaluate import estimate_rows, label_free, load_reference, registered, score_rows
from mlflow_retrain.loop.report import CycleReport
from mlflow_retrain.loop.signoff import review_candidate
from mlflow_retrain.policy.config import Config


@dataclass
class Cycle:
    """One cycle's world, handed to its steps: the policy, the data and its time, the registry (under
    the lease in a real cycle), the report being filled, and what was asked beyond the policy."""

    config: Config
    data: LabelledData
    as_of: pd.Timestamp
    registry: Registry
    report: CycleReport
    force: bool = False  # a requested retrain (`--force`, `--event`), recorded with `reason`
    reason: str | None = None
    event: str | None = None  # the system that asked
    via: str = PROJECT  # how a candidate is trained (`trainers.trainer`)
    reports_dir: Path | None = None  # where Evidently's reports go; None in a dry run
    loaded: dict[str, Scorer] = field(default_factory=dict)  # by version: a model is loaded once a cycle


def observe(c: Cycle) -> tuple[VersionInfo | None, Plan]:
    """Production, the Staging version and a person's verdict on it, the triggers when the plan needs
    them; the report holds what was seen and what a dry run would do. Returns Production and the plan."""
    report, registry = c.report, c.registry
    production = registry.production()
    report.production_version = production.version if production else None
    # a real cycle's reconcile has staged an unplaced pending version already: only a dry run looks
    staged = registry.staging() or (_unplaced(registry) if report.dry_run else None)
    found = None if staged is None else Staged(staged.version, staged.tags.get(T.DECISION),
                                               staged.tags.get(T.CYCLE_RUN_ID))
    if found is not None and found.awaits:
        # a person signed it off (CLI or UI tag) or nobody did within approval_ttl: carried out first
        report.approval = review_candidate(c.config, staged, c.as_of)
    step = first_step(report.production_version, found, report.approval)
    triggers = None
    if step == BOOTSTRAP:  # nothing to defend yet: the first model is trained, and promoted if it passes
        c.data.cut(Window.ending(c.config.monitoring.labelled(c.as_of), c.config.training.holdout), "holdout window")
    elif production is not None and step in (SIGN_OFF, ASSESS):
        # with a sign-off, Production is still monitored and the triggers evaluated (and recorded) as
        # in any cycle, but a retrain they ask for waits for the next cycle: one move per cycle
        triggers, report.monitoring, report.drift = evaluate_triggers(c, production, asked=step == ASSESS)
    unborn = str(registry.unborn) if registry.unborn else None
    chosen = plan(production=report.production_version, staged=found, approval=report.approval, triggers=triggers,
                  force=c.force, unborn=unborn)
    report.decision, report.outcome, report.candidate_version = chosen.decision, chosen.outcome, chosen.candidate
    return production, chosen


def _unplaced(registry: Registry) -> VersionInfo | None:
    """A pending version its cycle registered but never staged: a real cycle's reconcile stages it
    first; a dry run says it would be validated. The rule is the invariants' own (`STAGE_PENDING`)."""
    staged = [f.version for f in examine(registry, utcnow(), intent=False).findings
              if f.repair == STAGE_PENDING]
    return registry.get(staged[0]) if staged else None


def score_windows(config: Config, data: LabelledData, model: Scorer, windows: list[Window]) -> list[WindowScore]:
    """The metric per window; a window without rows is None (a gap), never an error or a zero."""
    scores = []
    for window in windows:
        try:
            rows = data.cut(window)
        except RetrainError:
            scores.append(WindowScore(window.iso(), 0, None))
            continue
        scores.append(WindowScore(window.iso(), len(rows), score_rows(config, data, model, rows).metrics.get(config.metric)))
    return scores


def version_time(version: VersionInfo) -> pd.Timestamp:
    """When a version was trained, in data time (its --as-of), so replays age models correctly."""
    stamp = version.tags.get(T.AS_OF)
    return pd.Timestamp(stamp) if stamp else pd.Timestamp(version.created_at).tz_convert(None)


def last_retrain(versions: list[VersionInfo]) -> pd.Timestamp | None:
    """The newest version a cycle made and judged: one a crash left unjudged does not start a cooldown."""
    made = [version_time(v) for v in versions if T.TRIGGER in v.tags and v.tags.get(T.DECISION) in T.JUDGED]
    return max(made) if made else None


def holdout_metric(config: Config, version: VersionInfo) -> float | None:
    """The version's own metric on its training-time holdout, as its training run logged it."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient().get_run(version.run_id).data.metrics.get(f"holdout_{config.metric}")
    except MlflowException:
        return None


def last_rejection(versions: list[VersionInfo]) -> pd.Timestamp | None:
    """The newest candidate a cycle made that was rejected (by the gate or a person): `max_age` waits after it."""
    made = [version_time(v) for v in versions if T.TRIGGER in v.tags and v.tags.get(T.DECISION) == T.REJECTED]
    return max(made) if made else None


def evaluate_triggers(c: Cycle, production: VersionInfo, *, asked: bool = True
                      ) -> tuple[RetrainDecision, list[WindowScore], DriftNumbers | None]:
    """Steps 2-3 of the cycle: gather Production's numbers from the registry and data, then `assess`.

    Without `asked`, a retrain the cycle was asked for (`force`, `reason`, `event`) is left out: the
    triggers are evaluated for the record only. Drift is measured (its reference, the
    training rows, downloaded) only when a trigger needs it or the cycle writes reports: with
    `monitoring.reports: on_change` and no drift trigger, a cycle that retrains nothing never reads
    the reference nor imports the drift and report machinery (issue 15: a cheap no-op cycle)."""
    config, data, as_of, reports_dir = c.config, c.data, c.as_of, c.reports_dir
    model = c.loaded.get(production.version)  # Production's, when the cycle loaded it already
    model = registered(config, data, production.version) if model is None else model
    # the metric reads the windows whose labels have arrived, drift the newest features (`label_delay`)
    labelled = config.monitoring.labelled(as_of)
    scores = score_windows(config, data, model, recent_windows(labelled, config, monitoring_depth(config)))
    latest = scores[-1]
    rows = data.cut(Window.parse(latest.window)) if latest.rows else None
    newest = data.rows(Window.ending(as_of, config.monitoring.window)) if config.monitoring.label_delay else rows
    newest = newest if newest is not None and len(newest) else None
    wanted = reports_dir is not None and config.monitoring.reports != "never"
    drifting = newest is not None and (config.triggers.needs("drift") or (wanted and config.monitoring.reports == "always"))
    reference, drift = _drift(production, data, newest) if drifting else (None, None)
    estimate = None
    if config.triggers.needs("estimate") and newest is not None:
        estimate = _estimate(config, data, model, production, newest)
    if c.report.dry_run:  # `check` reads the training run too (a cycle stays one read cheaper)
        own = holdout_metric(config, production)
        c.report.warnings = [w for t in config.triggers.configured if (w := t.below_floor(
            own, metric=config.metric, higher_is_better=config.higher_is_better))]
    trained_at = version_time(production)
    seen = production.tags.get(T.TRAIN_WINDOW)
    versions = c.registry.versions()
    decision = assess(config, as_of=as_of, scores=scores, drift=drift, trained_at=trained_at,
                      seen_until=Window.parse(seen).end if seen else None,
                      rows_since=data.count_after(trained_at, labelled),
                      last_retrain_at=last_retrain(versions), force=c.force and asked,
                      reason=c.reason if asked else None, event=c.event if asked else None, estimate=estimate,
                      last_rejected_at=last_rejection(versions))
    if newest is not None and wanted and (config.monitoring.reports == "always" or decision.retrain):
        from mlflow_retrain.adapters.reports import PREDICTION, drift_report, quality_report

        if reference is None:  # on_change, no drift trigger: measured now that the cycle retrains
            reference, drift = _drift(production, data, newest)
        # Evidently's HTML on the window that decided: kept when something changes (`monitoring.reports`)
        if rows is not None:
            quality_report(rows.assign(**{PREDICTION: model.predict(rows)}), data.spec, config.task,
                           reports_dir / "model_quality.html", config=config, version=production,
                           window=latest.window)
        drift_report(reference, newest, data.spec, reports_dir / "data_drift.html", config=config, version=production,
                     window=Window.ending(as_of, config.monitoring.window).iso())
    return decision, scores, drift


def _drift(production: VersionInfo, data: LabelledData, newest: pd.DataFrame) -> tuple[pd.DataFrame, DriftNumbers]:
    """Production's training rows and the newest window's drift against them, from DriftMeter (equal
    to Evidently's numbers, `drift.py`) as in the monitor and the backtest."""
    from mlflow_retrain.measure.drift import DriftMeter

    reference = load_reference(production.run_id)
    return reference, DriftMeter(reference, data.spec).measure(newest)


def _estimate(config: Config, data: LabelledData, model: Scorer, production: VersionInfo,
              rows: pd.DataFrame) -> float | None:
    """Production's metric on `rows` estimated without their labels, prepared on its holdout rows
    (None for a version with no holdout on record: one not made by a cycle)."""
    held = production.tags.get(T.HOLDOUT_WINDOW)
    reference = data.rows(Window.parse(held)) if held else None
    if reference is None or not len(reference):
        return None
    return estimate_rows(label_free(config, data, model, reference), data, model, rows)
