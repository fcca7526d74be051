"""What a cycle's report tells the world: its notification events and its evidence for the UI's story.

`adapters/notify.py` sends plain `Event`s and `adapters/registry/story.py` renders plain tags, so
neither knows a `CycleReport`: turning one into what they take happens here, above them. `notifies`
wraps `run_cycle` so that every cycle, whoever runs it, tells the policy's `notify:` targets.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any


from mlflow_retrain.adapters.notify import (AWAITING_APPROVAL, DOWNTIME, PROMOTED, REJECTED, Event, failure_event,
                                            notify)
from mlflow_retrain.adapters.registry.story import Evidence
from mlflow_retrain.adapters.data import Window
from mlflow_retrain.adapters.registry import Registry
from mlflow_retrain.base import tags as T
from mlflow_retrain.base.errors import LeaseHeldError, UsageError
from mlflow_retrain.decide.approval import sign_off_help
from mlflow_retrain.decide.words import HOUR, stamped, unit_for
from mlflow_retrain.loop.report import CycleReport, cycle_description, cycle_title
from mlflow_retrain.policy.config import Config



def cycle_events(report: CycleReport, config: Config | None = None) -> list[Event]:
    """What a finished cycle tells people: its verdict on a candidate (promoted, rejected, waiting
    for a person, with how to sign off and until when) and a data gap it found (labels stopped: the
    model is effectively down). A dry run and a cycle that decided nothing send nothing."""
    if report.dry_run:
        return []
    events = []
    payload = report.to_dict()
    who = f"{report.model_name} v{report.candidate_version}"
    verdicts = {PROMOTED: f"{who} promoted to Production",
                REJECTED: f"{who} rejected" + (": nothing in Production yet" if report.first_model_rejected else ""),
                AWAITING_APPROVAL: f"{who} passed the gate and awaits approval",
                T.CHALLENGER: f"{who} is the challenger: inconclusive against Production, scored beside it"}
    if report.outcome == AWAITING_APPROVAL:
        ttl = config.validation.approval_ttl if config is not None else None
        policy = str(config.source) if config is not None and config.source else "retrain.yaml"
        how = sign_off_help(report.model_name, str(report.candidate_version), datetime.fromisoformat(report.as_of),
                            ttl, policy)
        unit = unit_for(config.monitoring.window) if config is not None else HOUR
        until = (f"; expires as of {stamped(how['expires'], unit)}" if how["expires"]
                 else "; it waits until a person decides")
        reason = f"{report.reason}. To sign off: {how['approve']} (or {how['reject']}), {how['tag']}{until}"
        events.append(Event(AWAITING_APPROVAL, report.model_name, verdicts[AWAITING_APPROVAL], reason, payload, how))
    elif report.outcome in verdicts:
        events.append(Event(report.outcome, report.model_name, verdicts[report.outcome], report.reason, payload))
    elif report.outcome == T.EXPIRED:  # nobody signed off in time: the candidate is archived, told as a rejection
        events.append(Event(REJECTED, report.model_name, f"{who} expired: nobody approved it in time", report.reason,
                            payload))
    if report.stale:
        events.append(Event(DOWNTIME, report.model_name, f"{report.model_name}: labelled data stopped arriving",
                            report.stale, payload, {"health": [report.stale]}))
    return events


def cycle_evidence(report: CycleReport, experiment_id: str) -> Evidence:
    """What the candidate's page needs of the cycle that judged it (`retrain.evidence`): both models'
    scores on the one holdout, its window and hash, and the audit run with its reports."""
    gate = report.promotion
    return Evidence(report.metric, gate.candidate if gate else None, gate.baseline if gate else None,
                    report.production_version, report.holdout_window, report.holdout_digest, report.cycle_run_id,
                    experiment_id, list(report.reports))


def notifies(cycle: Callable[..., CycleReport]) -> Callable[..., CycleReport]:
    """Wrap `run_cycle`: tell the policy's targets what the cycle decided, or that it failed (then
    re-raise). Dry runs tell nobody; neither does a cycle that found another one running (that one
    will tell). The notification is sent after the lease is released, and after `on_report(report)`
    when given: the command line prints the report there, before waiting on any receiver."""

    @functools.wraps(cycle)
    def notified(config: Config, *args: Any, on_report: Callable[[CycleReport], None] | None = None,
                 **kwargs: Any) -> CycleReport:
        if not config.notify or kwargs.get("dry_run"):
            report = cycle(config, *args, **kwargs)
            if on_report is not None:
                on_report(report)
            return report
        try:
            report = cycle(config, *args, **kwargs)
        except LeaseHeldError:
            raise
        except UsageError:
            raise  # the command line was wrong: a person's typo, not a failure of the model
        except Exception as exc:
            notify(config, [failure_event(config.model_name, exc, kwargs.get("as_of"))])
            raise
        if on_report is not None:
            on_report(report)
        notify(config, cycle_events(report, config), run_id=report.cycle_run_id)
        return report

    return notified


def log_audit(config: Config, registry: Registry, report: CycleReport, reports_dir: Path) -> None:
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
        registry.tag(report.candidate_version, {T.EVIDENCE: cycle_evidence(report, run.info.experiment_id).to_json()})
    trained_by = registry.get(report.candidate_version).run_id if report.candidate_version else ""
    trained_in = MlflowClient().get_run(trained_by).info.experiment_id if trained_by else None  # a full link
    mlflow.set_tags({**tags, "mlflow.runName": cycle_title(config, report)[:250],
                     "mlflow.note.content": cycle_description(config, report, trained_by, trained_in)[:8000]})
