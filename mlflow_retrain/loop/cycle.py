"""One controller cycle: monitor Production, check triggers, retrain, validate, transition, audit.

A reconcile loop: each cycle reads the registry, decides, acts, and records why, under a lease so
two cycles started at once never both train or promote. Decisions come from the pure functions in
the decision core (`decide`: the plan, triggers and gate); the cycle's steps gather their inputs
(`observe`), carry out their verdicts (`validate`, `moves`) and record them (`report`).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pandas as pd

from mlflow_retrain.adapters.data import LabelledData
from mlflow_retrain.adapters.models import Scorer
from mlflow_retrain.adapters.registry import Registry, VersionInfo
from mlflow_retrain.adapters.tracking import check_tracking, start_run
from mlflow_retrain.adapters.trainers import PROJECT, make_candidate, preflight
from mlflow_retrain.base import tags as T
from mlflow_retrain.base.errors import DataError, RegistryError, UsageError
from mlflow_retrain.decide.words import unit_for
from mlflow_retrain.decide.challenge import PROMOTE
from mlflow_retrain.decide.plan import BOOTSTRAP, NOTHING, RETRAIN, SIGN_OFF, VALIDATE, Plan
from mlflow_retrain.loop.challenger import challenger_round
from mlflow_retrain.loop.evaluate import registered
from mlflow_retrain.loop.moves import place, signed_off
from mlflow_retrain.loop.observe import Cycle, observe
from mlflow_retrain.loop.reconcile import controller_experiment, reconciled
from mlflow_retrain.loop.events import log_audit, notifies
from mlflow_retrain.loop.report import CycleReport
from mlflow_retrain.loop.signoff import note_ignored
from mlflow_retrain.loop.validate import first_promoted, validate
from mlflow_retrain.policy.config import Config

log = logging.getLogger(__name__)


@notifies  # tells the policy's `notify:` targets what the cycle decided, or that it failed
def run_cycle(config: Config, *, as_of: str | None = None, force: bool = False, reason: str | None = None,
              event: str | None = None, dry_run: bool = False, via: str = PROJECT,
              data: LabelledData | None = None, bootstrap: bool = False) -> CycleReport:
    """One reconcile step. Inputs are checked before the lease, the run or any registry write.

    `bootstrap` allows starting a new registered model in a store where cycles of this policy
    finished before (otherwise that is a likely wrong model name or store, and refused).

    `event` names the system that asked (an HTTP request through CI): a forced retrain whose
    trigger is recorded as `event` rather than `on_demand`.

    With no Production yet, the first model is judged by the absolute gate alone (`_carry_out`).
    """
    force = _asked(force, reason, event)
    data = data or LabelledData.load(config)
    stamp = _data_time(data, as_of)
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
                         stale=data.labels_gap(stamp, config.monitoring.max_data_gap, live=as_of is None,
                                                 unit=unit_for(config.monitoring.window)),
                         data=None if data.counts is None else {**data.counts.to_dict(),
                                                                "summary": data.counts.line(data.origin)})
    if report.stale:
        log.warning("%s", report.stale)
    cycle = Cycle(config, data, stamp, registry, report, force, reason, event, via, loaded=loaded)
    if dry_run:
        observe(cycle)
        return report
    with reconciled(config, registry, stamp.to_pydatetime()) as repaired:
        report.reconciled = repaired
        return _cycle(cycle)


def _asked(force: bool, reason: str | None, event: str | None) -> bool:
    """Whether a retrain was asked for (`--force`, `--event`); one that was must say why."""
    if event is not None and not event.strip():
        raise UsageError("--event needs the name of the system that asked, e.g. --event repository_dispatch")
    force = force or event is not None
    if force and not (reason and reason.strip()):
        raise UsageError("--force and --event need --reason \"...\": every requested retrain records why")
    return force


def _data_time(data: LabelledData, as_of: str | None) -> pd.Timestamp:
    """The cycle's data time: `--as-of` (a bad one is bad input), else the newest row."""
    try:
        return data.resolve_as_of(as_of)
    except DataError as exc:
        if as_of is None:
            raise
        raise UsageError(str(exc)) from None


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


def _cycle(c: Cycle) -> CycleReport:
    """Under the lease: the cycle's run, the plan (`observe`) carried out, the record."""
    import mlflow

    report, registry, as_of = c.report, c.registry, c.as_of
    with tempfile.TemporaryDirectory() as tmp, start_run(
            controller_experiment(c.config), f"cycle as of {as_of.isoformat()}",
            {T.RUN_KIND: "cycle", "model_name": c.config.model_name, T.AS_OF: as_of.isoformat()}) as run:
        report.cycle_run_id = run.info.run_id
        c.reports_dir = Path(tmp)
        production, plan = observe(c)
        if report.approval is not None and report.approval.ignored:  # said once on the version that waits
            waiting = report.candidate_version or getattr(registry.staging(), "version", None)
            if waiting:
                note_ignored(registry, registry.get(waiting), report.approval, as_of,
                             unit_for(c.config.monitoring.window))
        # a challenger's rounds first; promoted, it is the cycle's one move of Production (a retrain waits)
        if plan.step not in (RETRAIN, NOTHING) or challenger_round(c, production) != PROMOTE:
            _carry_out(c, plan, production)
        log_audit(c.config, registry, report, c.reports_dir)
        if report.candidate_version:
            registry.describe()  # the versions' pages say what was decided (and the evidence), once it was
        registry.tag_model({T.LAST_CYCLE: f"{run.info.run_id} {report.outcome}"})  # its run has the rest
        mlflow.set_tags({"outcome": report.outcome, T.DECISION: report.outcome})
    return report


def _carry_out(c: Cycle, plan: Plan, production: VersionInfo | None) -> None:
    """The plan's step: a sign-off, a validation, or a new candidate trained, placed and validated.

    A first model (no Production yet) that passes the absolute gate becomes Production as it is
    placed. Failing, it is rejected like any candidate (archived, `retrain.decision=rejected` with
    the gate's reason): a model known to be too poor must not serve, and a verdict left `pending` in
    Staging would only be judged again on later rows. The cycle's outcome is `rejected` and its
    reason says the first model failed the gate and nothing is in Production; the next cycle trains
    a new first model on newer data (`promote VERSION` still serves a rejected one by hand).
    """
    report, registry = c.report, c.registry
    if plan.step == VALIDATE:
        validate(c, registry.get(plan.candidate), production)
    elif plan.step == SIGN_OFF:
        report.archived_versions = signed_off(registry, registry.get(plan.candidate), report.approval, c.as_of,
                                              by=report.cycle_run_id)
        report.outcome = report.approval.decision
    elif plan.step in (BOOTSTRAP, RETRAIN):
        # trained on the labels a cycle at as_of has: its data time is theirs (`label_delay`)
        made = make_candidate(c.config, c.data, c.config.monitoring.labelled(c.as_of),
                              trigger=",".join(plan.decision.fired), reason=plan.decision.reason,
                              cycle_run_id=report.cycle_run_id, via=c.via, registry=registry)
        place(c.config, registry, made)
        candidate = registry.get(made.version)
        report.candidate_version = made.version
        if production is None and candidate.tags.get(T.DECISION) == T.PROMOTED:
            first_promoted(c, candidate)  # the first model passed the absolute gate as it was placed
        else:
            # a first model that failed the gate is judged here like any candidate: archived,
            # rejected with the gate's reason, never left pending for a cycle to come
            validate(c, candidate, production)
