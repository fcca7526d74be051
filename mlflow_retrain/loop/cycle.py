"""One controller cycle: monitor Production, check triggers, retrain, validate, transition, audit.

A reconcile loop: each cycle reads the registry, decides, acts, and records why, under a lease so
two cycles started at once never both train or promote. Decisions come from the pure functions in
the decision core (`decide`: triggers and gate); this module only gathers their inputs from the
registry and the data, and carries out their verdicts.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from mlflow_retrain.base import tags as T
from mlflow_retrain.policy.config import Config
from mlflow_retrain.adapters.data import LabelledData, Window
from mlflow_retrain.decide import (PromotionDecision, RetrainDecision, WindowScore, assess, monitoring_depth,
                                   recent_windows)
from mlflow_retrain.measure.columns import DriftNumbers
from mlflow_retrain.decide.approval import REVALIDATE, ApprovalVerdict, hold
from mlflow_retrain.decide.verdicts import number
from mlflow_retrain.base.errors import DataError, RegistryError, RetrainError, UsageError
from mlflow_retrain.loop.evaluate import estimate_rows, judge, label_free, load_reference, registered, score_rows
from mlflow_retrain.adapters.models import Scorer
from mlflow_retrain.loop.events import cycle_evidence, notifies
from mlflow_retrain.loop.reconcile import Reconciled, controller_experiment, reconcile
from mlflow_retrain.adapters.registry import Registry, VersionInfo, utcnow
from mlflow_retrain.loop.signoff import await_approval, awaits, carry_out, note_ignored, review_candidate
from mlflow_retrain.adapters.tracking import check_tracking
from mlflow_retrain.adapters.trainers import PROJECT, make_candidate, preflight

log = logging.getLogger(__name__)


@dataclass
class CycleReport:
    """Everything one cycle saw and did; logged as `decision.json` and printed by the CLI."""

    model_name: str
    as_of: str
    dry_run: bool
    # no_retrain | blocked | would_retrain | would_validate | promoted | rejected | awaiting_approval | expired;
    # a dry run whose candidate a person signed off: would_promote | would_reject | would_expire
    outcome: str = "no_retrain"
    cycle_run_id: str | None = None
    production_version: str | None = None
    metric: str = "mae"
    monitoring: list[WindowScore] = field(default_factory=list)
    drift: DriftNumbers | None = None
    decision: RetrainDecision | None = None
    candidate_version: str | None = None
    promotion: PromotionDecision | None = None
    holdout_window: str | None = None
    holdout_digest: str | None = None
    archived_versions: list[str] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    reconciled: Reconciled | None = None  # what this cycle repaired first, after a crashed one
    stale: str | None = None  # labels stopped arriving: the newest is older than monitoring.max_data_gap
    approval: ApprovalVerdict | None = None  # what became of a candidate awaiting a person's sign-off
    # rows read, exact repeats and conflicting labels found, what data.duplicates did (`data.RowCounts`)
    data: dict[str, Any] | None = None

    @property
    def reason(self) -> str:
        """Why this cycle did what it did: the triggers, then the gate's verdict when there was one."""
        why = self.decision.reason if self.decision else ""
        if self.first_model_rejected:
            return (f"{why} => rejected: the first model failed the {failed_checks(self.promotion)}, so no version "
                    f"is in Production yet; it is archived and the next cycle trains another: {self.promotion.reason}")
        if self.promotion is not None:
            return f"{why} => {self.outcome}: {self.promotion.reason}"
        return why

    @property
    def first_model_rejected(self) -> bool:
        """No Production and the candidate failed the gate: nothing serves, which must read plainly."""
        return self.production_version is None and self.promotion is not None and not self.promotion.promote

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name, "as_of": self.as_of, "dry_run": self.dry_run, "outcome": self.outcome,
            "cycle_run_id": self.cycle_run_id, "production_version": self.production_version, "metric": self.metric,
            "monitoring": [w.__dict__ for w in self.monitoring],
            "drift": None if self.drift is None else {"drift_share": self.drift.drift_share,
                                                      "drifted_columns": self.drift.drifted_columns,
                                                      "total_columns": self.drift.total_columns},
            "retrain": None if self.decision is None else self.decision.to_dict(),
            "candidate_version": self.candidate_version,
            "promotion": None if self.promotion is None else self.promotion.to_dict(),
            "holdout_window": self.holdout_window, "holdout_digest": self.holdout_digest,
            "archived_versions": self.archived_versions, "reason": self.reason,
            "stale": self.stale, "approval": None if self.approval is None else self.approval.to_dict(),
            "data": self.data,
            "reconciled": None if self.reconciled is None or not self.reconciled.acted else self.reconciled.to_dict(),
        }

    def to_markdown(self) -> str:
        """The CI job summary: the decision first, then the evidence."""
        lines = [f"## mlflow-retrain cycle: **{self.outcome}** ({self.model_name}, as of {self.as_of})", ""]
        lines.append(f"- Production before the cycle: version {self.production_version or 'none'}")
        if self.candidate_version:
            lines.append(f"- Candidate: version {self.candidate_version}")
        lines.append(f"- Reason: {self.reason}")
        if self.stale:
            lines.append(f"- **Data gap**: {self.stale}")
        if self.data:
            lines.append(f"- Data: {self.data['summary']}")
        if self.reconciled is not None and self.reconciled.acted:
            lines.append(f"- Repaired first (run `{self.reconciled.run_id}`): "
                         + "; ".join(f.problem for f in self.reconciled.repairs)
                         + (f"; {len(self.reconciled.closed_runs)} crashed run(s) ended FAILED"
                            if self.reconciled.closed_runs else ""))
        if self.cycle_run_id:
            lines.append(f"- Audit run: `{self.cycle_run_id}`")
        if self.decision is not None and self.decision.results:  # none when bootstrapping or reconciling
            lines += ["", "| trigger | fired | reason |", "| --- | --- | --- |"]
            lines += [f"| {r.kind} | {'yes' if r.fired else 'no'} | {r.reason} |" for r in self.decision.results]
        if self.promotion is not None:
            lines += ["", "| check | result |", "| --- | --- |"]
            lines += [f"| gate | {r} |" for r in self.promotion.reasons]
        return "\n".join(lines) + "\n"


# ---- monitoring ----------------------------------------------------------------------------------
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


def evaluate_triggers(config: Config, data: LabelledData, as_of: pd.Timestamp, production: VersionInfo,
                      versions: list[VersionInfo], *, force: bool, reason: str | None, event: str | None,
                      reports_dir: Path | None, model: Scorer | None = None
                      ) -> tuple[RetrainDecision, list[WindowScore], DriftNumbers | None]:
    """Steps 2-3 of the cycle: gather Production's numbers from the registry and data, then `assess`.

    `model` is Production's, when the cycle loaded it already. Drift is measured (its reference, the
    training rows, downloaded) only when a trigger needs it or the cycle writes reports: with
    `monitoring.reports: on_change` and no drift trigger, a cycle that retrains nothing never reads
    the reference nor imports the drift and report machinery (issue 15: a cheap no-op cycle)."""
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
    trained_at = version_time(production)
    seen = production.tags.get(T.TRAIN_WINDOW)
    decision = assess(config, as_of=as_of, scores=scores, drift=drift, trained_at=trained_at,
                      seen_until=Window.parse(seen).end if seen else None,
                      rows_since=data.count_after(trained_at, labelled), last_retrain_at=last_retrain(versions),
                      force=force, reason=reason, event=event, estimate=estimate)
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


# ---- validation ---------------------------------------------------------------------------------
def compare(config: Config, data: LabelledData, holdout: Window, candidate: VersionInfo,
            production: VersionInfo | None) -> tuple[PromotionDecision, dict[str, Any]]:
    """Staging against Production, both loaded from the registry, on the holdout ending at as_of."""
    rows = data.cut(holdout, "holdout window")
    load = lambda v: registered(config, data, v.version)
    decision, evidence = judge(config, data, rows, load(candidate), None if production is None else load(production))
    return decision, {"holdout_window": holdout.iso(), **evidence}


def apply_decision(registry: Registry, candidate: VersionInfo, production: VersionInfo | None,
                   decision: PromotionDecision, when: pd.Timestamp, by: str = "") -> list[str]:
    """Promote (old Production archived) or archive the candidate, tagged with the verdict as one
    recorded move (`registry.moves`). Returns the versions archived."""
    tags = {T.DECISION: T.PROMOTED if decision.promote else T.REJECTED, T.DECISION_REASON: decision.reason,
            T.BASELINE_VERSION: production.version if production else ""}
    if decision.promote:
        previous = registry.promote(candidate.version, when=when.to_pydatetime(), tags=tags, by=by)
        return [previous.version] if previous else []
    registry.archive(candidate.version, when=when.to_pydatetime(), tags=tags, by=by)
    return [candidate.version]


# ---- the cycle ----------------------------------------------------------------------------------
@notifies  # tells the policy's `notify:` targets what the cycle decided, or that it failed
def run_cycle(config: Config, *, as_of: str | None = None, force: bool = False, reason: str | None = None,
              event: str | None = None, dry_run: bool = False, via: str = PROJECT,
              data: LabelledData | None = None, bootstrap: bool = False) -> CycleReport:
    """One reconcile step. Inputs are checked before the lease, the run or any registry write.

    `bootstrap` allows starting a new registered model in a store where cycles of this policy
    finished before (otherwise that is a likely wrong model name or store, and refused).

    `event` names the system that asked (an HTTP request through CI): a forced retrain whose
    trigger is recorded as `event` rather than `on_demand`.

    With no Production yet, the first model is judged by the absolute gate alone. Passing, it becomes
    Production. Failing, it is rejected like any candidate (archived, `retrain.decision=rejected` with
    the gate's reason): a model known to be too poor must not serve, and a verdict left `pending` in
    Staging would only be judged again on later rows. The cycle's outcome is `rejected` and its
    reason says the first model failed the gate and nothing is in Production; the next cycle trains
    a new first model on newer data (`promote VERSION` still serves a rejected one by hand).
    """
    if event is not None and not event.strip():
        raise UsageError("--event needs the name of the system that asked, e.g. --event repository_dispatch")
    force = force or event is not None
    if force and not (reason and reason.strip()):
        raise UsageError("--force and --event need --reason \"...\": every requested retrain records why")
    data = data or LabelledData.load(config)
    try:
        stamp = data.resolve_as_of(as_of)
    except DataError as exc:
        if as_of is None:
            raise
        raise UsageError(str(exc)) from None
    if not dry_run:
        preflight(config, via, data=data, as_of=config.monitoring.labelled(stamp))
    check_tracking(write=not dry_run)
    registry = Registry(config)
    production = registry.production()
    loaded: dict[str, Scorer] = {}  # by version: a model is loaded once a cycle (skops, a download)
    if production is not None and not dry_run:
        # a model that no longer loads is refused before the lease; the cycle scores this one under it
        loaded[production.version] = registered(config, data, production.version)
    if not bootstrap and registry.unborn is None and not registry.exists():  # a store not made yet saw no cycle
        _refuse_silent_bootstrap(config)
    report = CycleReport(config.model_name, stamp.isoformat(), dry_run, metric=config.metric,
                         stale=data.labels_gap(stamp, config.monitoring.max_data_gap, live=as_of is None),
                         data=None if data.counts is None else {**data.counts.to_dict(),
                                                                "summary": data.counts.line(data.origin)})
    if report.stale:
        log.warning("%s", report.stale)
    if dry_run:
        _observe(config, data, stamp, registry, report, force=force, reason=reason, event=event, reports_dir=None)
        return report
    with registry.hold(config.registry.lease_ttl):
        report.reconciled = reconcile(config, registry, stamp.to_pydatetime())
        return _cycle(config, data, stamp, registry, report, force=force, reason=reason, event=event, via=via,
                      loaded=loaded)


def _refuse_silent_bootstrap(config: Config) -> None:
    """No registered model, but this store has seen cycles of the policy finish (a finished cycle
    always leaves a registered model): the policy most likely points at the wrong model name, and a
    bootstrap would start a duplicate. Say so instead. A cycle that crashed before registering
    finished nothing, so its recovery still bootstraps."""
    import mlflow

    from mlflow_retrain.base.redact import redact

    experiment = mlflow.get_experiment_by_name(controller_experiment(config))
    if experiment is None or not mlflow.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'",
                                                    max_results=1, output_format="list"):
        return
    raise RegistryError(
        f"no registered model {config.model_name!r} in {redact(mlflow.get_tracking_uri())}, but cycles of "
        f"{controller_experiment(config)!r} finished there before: check model_name and the store; pass "
        "--bootstrap to start a new model on purpose")


def _observe(config: Config, data: LabelledData, as_of: pd.Timestamp, registry: Registry, report: CycleReport,
             *, force: bool, reason: str | None, event: str | None, reports_dir: Path | None,
             loaded: dict[str, Scorer] | None = None) -> VersionInfo | None:
    production = registry.production()
    report.production_version = production.version if production else None
    # a real cycle's reconcile has staged an unplaced pending version already: only a dry run looks
    staged = registry.staging() or (_unplaced(registry) if report.dry_run else None)
    waiting = staged if awaits(staged) else None
    if waiting is not None:
        # a person signed it off (CLI or UI tag) or nobody did within approval_ttl: carried out first
        report.approval = review_candidate(config, waiting, as_of)
        if report.approval.final:
            # carried out this cycle; Production is still monitored and the triggers evaluated (and
            # recorded) as in any cycle, but a retrain they ask for waits for the next cycle: one
            # move of the candidate per cycle
            why = f"Staging v{waiting.version} awaited approval: {report.approval.reason}"
            fired, results = [], []
            if production is not None:
                decision, report.monitoring, report.drift = evaluate_triggers(
                    config, data, as_of, production, registry.versions(), force=False, reason=None, event=None,
                    reports_dir=reports_dir, model=(loaded or {}).get(production.version))
                fired, results = decision.fired, decision.results
                if decision.retrain:
                    why += f"; triggers fired ({decision.reason}): the next cycle retrains"
            report.decision = RetrainDecision(False, fired, results, why, None)
            report.candidate_version = waiting.version
            report.outcome = f"would_{report.approval.action}"
            return production
    revalidate = report.approval is not None and report.approval.action == REVALIDATE
    if staged is not None and (staged.tags.get(T.DECISION) == T.PENDING or revalidate):
        # Reconcile first: a candidate nobody judged (its cycle crashed, or it was trained by hand)
        # is validated before anything new is trained, so no version is left pending forever.
        cycle = staged.tags.get(T.CYCLE_RUN_ID)
        origin = f"made by cycle {cycle}, which ended before judging it" if cycle else "trained outside a cycle"
        origin = f"it awaited approval, but {report.approval.reason}" if revalidate else origin
        against = "against Production" if production else "against the absolute gate (no Production yet)"
        report.decision = RetrainDecision(False, [], [], f"Staging v{staged.version} is pending ({origin}): "
                                               f"validated {against} before any new retrain", None)
        report.candidate_version = staged.version
        report.outcome = "would_validate"
        return production
    if production is None:
        # nothing to defend yet: the first model is trained and, if it passes the gate, promoted
        data.cut(Window.ending(config.monitoring.labelled(as_of), config.training.holdout), "holdout window")
        unborn = f" (no store yet: the first cycle creates {registry.unborn})" if registry.unborn else ""
        report.decision = RetrainDecision(True, [T.BOOTSTRAP], [], f"no Production version: bootstrap{unborn}", None)
        if waiting is not None:  # a first model awaits approval: no second one on top of it
            report.decision = hold(report.decision, waiting.version, forced=force)
        report.outcome = "would_retrain" if report.decision.retrain else "blocked"
        return None
    decision, scores, drift = evaluate_triggers(config, data, as_of, production, registry.versions(), force=force,
                                                reason=reason, event=event, reports_dir=reports_dir,
                                                model=(loaded or {}).get(production.version))
    if waiting is not None:  # triggers are evaluated and reported, but only a forced retrain supersedes it
        decision = hold(decision, waiting.version, forced=force)
    report.decision, report.monitoring, report.drift = decision, scores, drift
    report.outcome = "would_retrain" if decision.retrain else ("blocked" if decision.blocked_by else "no_retrain")
    return production


def _unplaced(registry: Registry) -> VersionInfo | None:
    """A pending version its cycle registered but never staged: a real cycle's reconcile stages it
    first; a dry run says it would be validated. The rule is the invariants' own (`STAGE_PENDING`)."""
    from mlflow_retrain.decide.invariants import STAGE_PENDING
    from mlflow_retrain.adapters.registry.repair import examine

    staged = [f.version for f in examine(registry, utcnow(), intent=False).findings
              if f.repair == STAGE_PENDING]
    return registry.get(staged[0]) if staged else None


def _cycle(config: Config, data: LabelledData, as_of: pd.Timestamp, registry: Registry, report: CycleReport, *,
           force: bool, reason: str | None, event: str | None, via: str,
           loaded: dict[str, Scorer] | None = None) -> CycleReport:
    import mlflow

    from mlflow_retrain.adapters.tracking import start_run

    with tempfile.TemporaryDirectory() as tmp, start_run(
            controller_experiment(config), f"cycle as of {as_of.isoformat()}",
            {T.RUN_KIND: "cycle", "model_name": config.model_name, T.AS_OF: as_of.isoformat()}) as run:
        report.cycle_run_id = run.info.run_id
        reports_dir = Path(tmp)
        production = _observe(config, data, as_of, registry, report, force=force, reason=reason, event=event,
                              reports_dir=reports_dir, loaded=loaded)
        decision = report.decision
        if report.approval is not None and report.approval.ignored:  # said once on the version that waits
            waiting = report.candidate_version or getattr(registry.staging(), "version", None)
            if waiting:
                note_ignored(registry, registry.get(waiting), report.approval, as_of)
        if report.outcome == "would_validate":
            _validate(config, data, as_of, registry, report, registry.get(report.candidate_version), production)
        elif report.approval is not None and report.approval.final:
            report.archived_versions = carry_out(registry, registry.get(report.candidate_version), report.approval,
                                                 as_of, by=run.info.run_id)
            report.outcome = report.approval.decision
        elif decision.retrain:
            trigger = ",".join(decision.fired)
            # trained on the labels a cycle at as_of has: its data time is theirs (`label_delay`)
            version = make_candidate(config, data, config.monitoring.labelled(as_of), trigger=trigger,
                                     reason=decision.reason,
                                     cycle_run_id=run.info.run_id, via=via, registry=registry)
            candidate = registry.get(version)
            report.candidate_version = version
            if production is None and candidate.tags.get(T.DECISION) == T.PROMOTED:
                report.outcome = T.PROMOTED  # the first model passed the absolute gate as it was placed
            else:
                # a first model that failed the gate is judged here like any candidate: archived,
                # rejected with the gate's reason, never left pending for a cycle to come
                _validate(config, data, as_of, registry, report, candidate, production)
        _log_audit(config, registry, report, reports_dir)
        if report.candidate_version:
            registry.describe()  # the versions' pages say what was decided (and the evidence), once it was
        registry.tag_model({T.LAST_CYCLE: f"{run.info.run_id} {utcnow().isoformat(timespec='seconds')} "
                                          f"as_of={as_of.isoformat()} {report.outcome}"})
        mlflow.set_tags({"outcome": report.outcome, T.DECISION: report.outcome})
    return report


def _validate(config: Config, data: LabelledData, as_of: pd.Timestamp, registry: Registry, report: CycleReport,
              candidate: VersionInfo, production: VersionInfo | None) -> None:
    """Steps 5-7: compare on one holdout, gate, promote or archive; the numbers go to the report and run."""
    holdout = Window.ending(config.monitoring.labelled(as_of), config.training.holdout)
    promotion, evidence = compare(config, data, holdout, candidate, production)
    report.promotion = promotion
    report.holdout_window, report.holdout_digest = evidence["holdout_window"], evidence["holdout_digest"]
    if promotion.promote and config.validation.require_approval:  # a person signs off first (`signoff.py`)
        await_approval(registry, candidate, production, promotion, as_of, by=report.cycle_run_id or "")
        report.outcome = T.AWAITING_APPROVAL
    else:
        report.archived_versions = apply_decision(registry, candidate, production, promotion, as_of,
                                                  by=report.cycle_run_id or "")
        report.outcome = T.PROMOTED if promotion.promote else T.REJECTED
    _log_comparison(evidence)


def _log_comparison(evidence: dict[str, Any]) -> None:
    import mlflow

    mlflow.log_params({"holdout_window": evidence["holdout_window"], "holdout_digest": evidence["holdout_digest"],
                       "holdout_rows": evidence["holdout_rows"]})
    # `holdout_` as in the training runs: both models scored on the cycle's one holdout, the gate's numbers
    for who in ("candidate", "production"):
        if evidence[who]:
            mlflow.log_metrics({f"holdout_{who}_{k}": v for k, v in evidence[who].items() if np.isfinite(v)})


def _log_audit(config: Config, registry: Registry, report: CycleReport, reports_dir: Path) -> None:
    """The cycle's own record: triggers with their numbers, the decision, versions touched; the run
    renamed after its outcome and described in Markdown for whoever opens it in the MLflow UI. Its
    metrics go in one batch and its tags in one call: each is a store round trip (a transaction on
    sqlite), and most cycles change nothing."""
    import time

    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    payload = report.to_dict()
    tags = {"production_version": report.production_version or "", "candidate_version": report.candidate_version or "",
            "reason": report.reason[:7900]}
    if report.stale:
        tags["data_gap"] = report.stale
    now = int(time.time() * 1000)
    metrics = []
    if report.decision is not None:
        tags["triggers_fired"] = ",".join(report.decision.fired)
        metrics += [Metric(f"trigger.{result.kind}", float(result.fired), now, 0) for result in report.decision.results]
    # the monitoring series has its own name: `holdout_production_<metric>` is the gate's score of
    # Production on the holdout, and one name for both showed a number the gate never compared. Each
    # point is stamped with its window's end (data time), so the UI's time axis is the data's.
    metrics += [Metric(f"monitor_{report.metric}", score.metric, Window.parse(score.window).end.value // 1_000_000, step)
                for step, score in enumerate(report.monitoring) if score.metric is not None]
    if report.drift is not None:
        metrics.append(Metric("drift_share", report.drift.drift_share, now, 0))
    run = mlflow.active_run()
    if metrics:
        MlflowClient().log_batch(run.info.run_id, metrics=metrics)
    mlflow.log_dict(payload, "decision.json")
    for html in sorted(reports_dir.glob("*.html")):
        mlflow.log_artifact(str(html), "reports")
        report.reports.append(f"reports/{html.name}")
    if report.promotion is not None and report.candidate_version:  # the gate's evidence, for the version's page
        registry.tag(report.candidate_version,
                     {T.EVIDENCE: cycle_evidence(report, run.info.experiment_id).to_json()})
    trained_by = registry.get(report.candidate_version).run_id if report.candidate_version else ""
    mlflow.set_tags({**tags, "mlflow.runName": cycle_title(config, report)[:250],
                     "mlflow.note.content": cycle_description(config, report, trained_by)[:8000]})


def _cmp(higher_is_better: bool, better: bool) -> str:
    """The sign that reads "better" (or "not better") for the metric's direction."""
    return (">" if better else "<=") if higher_is_better else ("<" if better else ">=")


def failed_checks(gate: PromotionDecision, otherwise: str = "gate") -> str:
    """The checks a candidate failed, by name (`absolute gate`, `relative gate`, ...), for the titles
    and reasons that must say which; `otherwise` when no check names itself as failed."""
    return ", ".join(r.split(":", 1)[0] for r in gate.reasons if r.endswith("(fail)")) or otherwise


def cycle_title(config: Config, report: CycleReport) -> str:
    """The audit run's name: the outcome and the numbers behind it, e.g. `v7 promoted: mae 44.7 < 85.2`."""
    n, metric, hib = number, report.metric, config.higher_is_better
    version = f"v{report.candidate_version}"
    gate = report.promotion
    if gate is not None:
        verdict = "awaits approval" if report.outcome == T.AWAITING_APPROVAL else (
            "promoted" if gate.promote else "rejected")
        if gate.baseline is None or not np.isfinite(gate.candidate):
            bound = (f" {_cmp(hib, gate.promote)} {'min' if hib else 'max'} {n(gate.threshold)}"
                     if gate.threshold is not None else "")
            where = (f"first model failed the {failed_checks(gate)}, no Production yet" if report.first_model_rejected
                     else "no Production to beat" if gate.baseline is None else "no score on the holdout")
            return f"{version} {verdict}: {metric} {n(gate.candidate)}{bound} ({where})"
        better = gate.candidate > gate.baseline if hib else gate.candidate < gate.baseline
        title = f"{version} {verdict}: {metric} {n(gate.candidate)} {_cmp(hib, better)} {n(gate.baseline)}"
        if not gate.promote and better and failed_checks(gate, ""):
            title += f" but {failed_checks(gate, '')} failed"
        return title
    if report.approval is not None and report.approval.final:
        return f"{version} {report.outcome}: {report.approval.reasons[0]}"
    if report.outcome == T.PROMOTED:
        return f"{version} promoted: bootstrap, no Production before"
    decision = report.decision
    if decision is None:
        return f"{report.outcome}: as of {report.as_of}"
    if report.outcome == "blocked":
        return f"no retrain, blocked by {decision.blocked_by}: {', '.join(decision.fired)} fired"
    threshold = next((r for r in decision.results if r.kind == "metric_threshold" and "value" in r.evidence), None)
    if threshold is not None:
        value, limit = threshold.evidence["value"], threshold.evidence["limit"]
        return f"no retrain: {metric} {n(value)} {'>=' if hib else '<='} {n(limit)}"
    latest = next((w.metric for w in reversed(report.monitoring) if w.metric is not None), None)
    return f"no retrain: {metric} {n(latest)}, no trigger fired" if latest is not None else "no retrain: no trigger fired"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def cycle_description(config: Config, report: CycleReport, trained_by: str = "") -> str:
    """The audit run's Markdown description (`mlflow.note.content`): the decision, the triggers, the
    gate's numbers and links to the candidate's training run and version."""
    n, metric = number, report.metric
    lines = [f"**{cycle_title(config, report)}**", "",
             f"Cycle as of `{report.as_of}` on `{report.model_name}`: Production was "
             f"{'v' + report.production_version if report.production_version else 'none'}."]
    if report.candidate_version:
        version = report.candidate_version
        run = f", trained by run [`{trained_by}`](#/runs/{trained_by})" if trained_by else ""
        lines[-1] += (f" Candidate [v{version}](#/models/{report.model_name}/versions/{version}){run}.")
    lines += ["", "### Decision", "", report.reason or report.outcome]
    if report.approval is not None and report.approval.ignored:
        lines += ["", f"**Note:** {report.approval.reasons[0]}"]
    if report.stale:
        lines += ["", f"**Data gap:** {report.stale}"]
    if report.decision is not None and report.decision.results:
        lines += ["", "### Triggers", "", "| trigger | fired | reason |", "| --- | --- | --- |"]
        lines += [f"| `{r.kind}` | {'**yes**' if r.fired else 'no'} | {_cell(r.reason)} |"
                  for r in report.decision.results]
    gate = report.promotion
    if gate is not None:
        lines += ["", f"### Gate on the holdout `{report.holdout_window}`", "",
                  f"Both models scored on the same rows (digest `{report.holdout_digest}`); metrics "
                  f"`holdout_candidate_{metric}` and `holdout_production_{metric}`.", "",
                  f"| | {metric} |", "| --- | --- |", f"| candidate v{report.candidate_version} | {n(gate.candidate)} |"]
        if gate.baseline is not None:
            lines.append(f"| Production v{report.production_version} | {n(gate.baseline)} |")
        lines += ["", "| check | result |", "| --- | --- |"]
        lines += [f"| {_cell(r.split(':', 1)[0])} | {_cell(r.split(':', 1)[-1].strip())} |" for r in gate.reasons]
    scored = [w for w in report.monitoring if w.metric is not None]
    if scored:
        lines += ["", f"### Production's {metric} per window (metric `monitor_{metric}`)", "",
                  f"| window | rows | {metric} |", "| --- | --- | --- |"]
        lines += [f"| `{w.window}` | {w.rows} | {n(w.metric)} |" for w in scored]
    if report.drift is not None:
        lines += ["", f"Drift share {n(report.drift.drift_share)} ({report.drift.drifted_columns} of "
                      f"{report.drift.total_columns} columns)."]
    lines += ["", "Everything above is also in the artifact `decision.json`."]
    return "\n".join(lines)


# ---- manual moves ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ManualMove:
    action: str
    version: str
    previous: str | None
    reason: str
    run_id: str
    as_of: str  # the data time the move applies to (the audit trail's one timeline)
    wall: str  # the clock when it was made

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def move_time(config: Config, as_of: str | None) -> pd.Timestamp:
    """Data time for a move by hand: `--as-of`, else the newest row of the data. A rollback in an
    incident must not fail because the data cannot be read: then the clock, with a warning."""
    try:
        return LabelledData.load(config).resolve_as_of(as_of)
    except RetrainError:
        if as_of is not None:
            raise
        log.warning("the data cannot be read: the move is stamped with the clock as its data time")
        return pd.Timestamp(utcnow().replace(tzinfo=None))


def _manual(config: Config, action: str, version: str, reason: str, as_of: str | None,
            pick: Callable[[Registry], VersionInfo] | None = None) -> ManualMove:
    if not reason.strip():
        raise RetrainError(f"{action} needs --reason \"...\": every move of Production records why")
    when = move_time(config, as_of)
    check_tracking()
    registry = Registry(config)
    registry.require()
    target = pick(registry) if pick else registry.get(version)
    production = registry.production()
    if production is not None and production.version == target.version:
        raise RegistryError(f"version {target.version} is already in Production")
    with registry.hold(config.registry.lease_ttl):
        reconcile(config, registry, when.to_pydatetime())
        production = registry.production()
        from mlflow_retrain.adapters.tracking import start_run
        import mlflow

        title = manual_title(action, target, production)
        with start_run(controller_experiment(config), title,
                       {T.RUN_KIND: action, "model_name": config.model_name, T.AS_OF: when.isoformat(),
                        "mlflow.note.content": manual_description(config, title, when, reason, target, production)
                        }) as run:
            wall = utcnow().isoformat(timespec="seconds")
            # a version rolled back from is not a rollback target again until it is promoted again
            left = {T.ROLLED_BACK_WALL: utcnow().isoformat()} if action == "rollback" else {}
            previous = registry.promote(target.version, when=when.to_pydatetime(), by=run.info.run_id, tags={
                T.DECISION: T.PROMOTED, T.DECISION_REASON: f"{action}: {reason}",
                T.BASELINE_VERSION: production.version if production else "",
                f"retrain.{action}_run_id": run.info.run_id}, previous_tags=left)
            move = ManualMove(action, target.version, previous.version if previous else None, reason,
                              run.info.run_id, when.isoformat(), wall)
            registry.describe()
            mlflow.set_tags({"outcome": action, "production_version": move.previous or "",
                             "candidate_version": target.version, "reason": reason})
            mlflow.log_dict(move.to_dict(), "decision.json")
            registry.tag_model({T.LAST_CYCLE: f"{run.info.run_id} {wall} as_of={when.isoformat()} {action}"})
    from mlflow_retrain.adapters.notify import move_event, notify

    notify(config, [move_event(config.model_name, action, move.version, move.previous, reason, move.run_id)],
           run_id=move.run_id)
    return move


def manual_title(action: str, target: VersionInfo, production: VersionInfo | None) -> str:
    """A move by hand's run name: `rollback to v6 from v7`, `v5 promoted by hand, replacing v7`."""
    was = f"v{production.version}" if production else "none"
    if action == "rollback":
        return f"rollback to v{target.version} from {was}"
    return f"v{target.version} {action}d by hand, replacing {was}"


def manual_description(config: Config, title: str, when: pd.Timestamp, reason: str, target: VersionInfo,
                       production: VersionInfo | None) -> str:
    link = lambda v: f"[v{v.version}](#/models/{config.model_name}/versions/{v.version})"
    pages = ", ".join(link(v) for v in (target, production) if v is not None)
    return (f"**{title}**\n\nMoved by hand as of `{when.isoformat()}` on `{config.model_name}`, because: "
            f"{reason}\n\nThe versions' pages: {pages}.")[:8000]


def promote(config: Config, version: str, reason: str, as_of: str | None = None) -> ManualMove:
    """Put a chosen version in Production by hand (the old one archived), tagged and audited."""
    return _manual(config, "promote", version, reason, as_of)


def previous_production(registry: Registry) -> VersionInfo:
    """The version in Production before the current one: the most recently promoted other version,
    leaving out versions a rollback took out of Production since (so rollback walks back, never toggles)."""
    current = registry.production()

    def eligible(v: VersionInfo) -> bool:
        rolled_back = v.tags.get(T.ROLLED_BACK_WALL, "")
        return (T.PROMOTED_AT in v.tags and (current is None or v.version != current.version)
                and v.stage != "Staging" and not rolled_back > v.tags.get(T.PROMOTED_WALL, ""))

    candidates = [v for v in registry.versions() if eligible(v)]
    if not candidates:
        raise RegistryError(f"model {registry.name!r} has no earlier Production version to roll back to")
    return max(candidates, key=lambda v: (v.tags.get(T.PROMOTED_WALL, ""), v.number))


def rollback(config: Config, reason: str, as_of: str | None = None) -> ManualMove:
    """Back to the previous Production version (found from the promotion tags)."""
    return _manual(config, "rollback", "", reason, as_of, pick=previous_production)
