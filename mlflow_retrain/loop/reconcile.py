"""Converge after a crash: finish or undo what a dead cycle left, close its runs, audit the repair.

Every cycle starts here, under the lease, before it observes anything; `mlflow-retrain doctor` runs
the same diagnosis without the lease (read-only) and, with `--repair`, takes the lease and repairs.
A repair is recorded as its own run (kind `reconcile`) in the controller's experiment, opened before
the first write, so a person can see what a crash left and what was done about it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mlflow.exceptions import MlflowException

from mlflow_retrain.adapters import outbox
from mlflow_retrain.base import links
from mlflow_retrain.base import tags as T
from mlflow_retrain.policy.config import Config
from mlflow_retrain.decide.invariants import Diagnosis, Finding
from mlflow_retrain.adapters.registry import Registry, utcnow
from mlflow_retrain.adapters.registry.lease import held_by
from mlflow_retrain.adapters.registry.story import padded
from mlflow_retrain.adapters.registry.repair import examine
from mlflow_retrain.loop.moves import corrupt_intents, repair

log = logging.getLogger(__name__)

KINDS = ("cycle", "reconcile", "promote", "rollback")


def controller_experiment(config: Config) -> str:
    return f"{config.experiment}-controller"


@dataclass
class Reconciled:
    """What one reconcile found and did."""

    repairs: list[Finding] = field(default_factory=list)
    closed_runs: list[str] = field(default_factory=list)
    run_id: str | None = None

    @property
    def acted(self) -> bool:
        return bool(self.repairs or self.closed_runs)

    def to_dict(self) -> dict[str, Any]:
        return {"repairs": [f.to_dict() for f in self.repairs], "closed_runs": self.closed_runs, "run_id": self.run_id}


@contextmanager
def reconciled(config: Config, registry: Registry, as_of: datetime) -> Iterator[Reconciled]:
    """Under the lease, once what a crashed command left is repaired: where a cycle and a move by hand
    work. Yields what the repair did."""
    with registry.hold(config.registry.lease_ttl):
        yield reconcile(config, registry, as_of)


def crashed_runs(config: Config, keep: set[str]) -> list[Any]:
    """Runs of cycles (and the training runs they started) still RUNNING: only dead or fenced-off
    processes leave them, since whoever asks holds the lease (or found it free).

    A training run is a cycle's from the moment it exists: `mlflow run` (or the in-process trainer)
    creates it as a child of the cycle's open run (`mlflow.parentRunId`), long before its entry
    point tags it with `retrain.cycle_run_id`; and it is found whether or not its cycle's run was
    ended already (by an earlier reconcile that could not yet tell it was the cycle's)."""
    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    controller = mlflow.get_experiment_by_name(controller_experiment(config))
    if controller is None:
        return []
    running = "attributes.status = 'RUNNING'"
    found = [r for r in mlflow.search_runs([controller.experiment_id], running, output_format="list")
             if r.info.run_id not in keep]
    training = mlflow.get_experiment_by_name(config.experiment)
    if training is None:
        return found
    cycles: dict[str, bool] = {r.info.run_id: True for r in found}

    def a_cycle(run_id: str) -> bool:  # a run of the controller's experiment (a parent may be anyone's)
        if run_id not in cycles:
            try:
                cycles[run_id] = mlflow.get_run(run_id).info.experiment_id == controller.experiment_id
            except MlflowException:
                cycles[run_id] = False
        return cycles[run_id]

    for run in mlflow.search_runs([training.experiment_id], running, output_format="list"):
        owner = run.data.tags.get(T.CYCLE_RUN_ID) or run.data.tags.get(MLFLOW_PARENT_RUN_ID, "")
        if run.info.run_id not in keep and owner and owner not in keep and (
                run.data.tags.get(T.CYCLE_RUN_ID) or a_cycle(owner)):
            found.append(run)
    return found


def reconcile(config: Config, registry: Registry, as_of: datetime, keep: set[str] = frozenset()) -> Reconciled:
    """Under the lease: repair the registry's invariants and close crashed runs, in an audited run."""
    diagnosis = examine(registry, as_of)
    stale = crashed_runs(config, set(keep))
    result = Reconciled()
    if diagnosis.healthy and not stale:
        return result
    import mlflow
    from mlflow.tracking import MlflowClient

    from mlflow_retrain.adapters.tracking import start_run

    problems = len(diagnosis.findings) + len(stale)
    with start_run(controller_experiment(config), f"reconcile: {problems} problem{'s' * (problems != 1)} repaired",
                   {T.RUN_KIND: "reconcile", "model_name": config.model_name, T.AS_OF: as_of.isoformat()}) as run:
        result.run_id = run.info.run_id
        client = MlflowClient()
        for crashed in stale:
            client.set_tag(crashed.info.run_id, T.CLOSED_BY, run.info.run_id)
            client.set_tag(crashed.info.run_id, T.CLOSED_REASON, closed_reason(crashed))
            client.set_terminated(crashed.info.run_id, "FAILED")
            result.closed_runs.append(crashed.info.run_id)
        result.repairs = repair(registry, as_of, by=run.info.run_id)
        if result.repairs:
            registry.describe()  # the versions' pages follow the repaired tags
        summary = "; ".join([f.problem for f in result.repairs] +
                            [f"run {r} was left RUNNING by a crashed cycle: ended FAILED" for r in result.closed_runs])
        mlflow.set_tags({"outcome": "reconciled", "reason": summary[:7900],
                         "mlflow.runName": reconcile_title(result)[:250],
                         "mlflow.note.content": reconcile_description(config, result, as_of)[:8000]})
        mlflow.log_dict(result.to_dict(), "reconcile.json")
    log.warning("reconciled %s: %s", config.model_name, summary)
    return result


def closed_reason(crashed: Any) -> str:
    """Why a run found RUNNING counts as crashed (`crashed_runs`), for its `retrain.closed_reason`."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    owner = crashed.data.tags.get(T.CYCLE_RUN_ID) or crashed.data.tags.get(MLFLOW_PARENT_RUN_ID)
    if owner:
        return (f"a training run of cycle {owner}, which is over (it crashed, was killed or lost its lease): "
                "nothing runs it any more")
    return "its cycle's process is gone (crashed, killed, or fenced off after losing the lease)"


def reconcile_title(result: Reconciled) -> str:
    """The repair run's name: what was wrong, e.g. `reconcile: a move was cut short: v3 to Production`."""
    said = [f.problem for f in result.repairs]
    if result.closed_runs:
        said.append(f"{len(result.closed_runs)} crashed run{'s' * (len(result.closed_runs) != 1)} ended FAILED")
    more = f" (+{len(said) - 1} more)" if len(said) > 1 else ""
    return f"reconcile: {said[0] if said else 'nothing to repair'}{more}"


def reconcile_description(config: Config, result: Reconciled, as_of: datetime) -> str:
    from mlflow_retrain.adapters.tracking import run_page

    lines = [reconcile_title(result), "",
             f"As of `{as_of.isoformat()}` the registry of `{config.model_name}` broke an invariant or a crashed "
             "cycle had left its runs open; this run repaired that before anything else was done."]
    if result.repairs:
        lines += ["", "| problem | repair |", "| --- | --- |"]
        lines += [f"| {f.problem.replace('|', '/')} | `{f.repair}`"
                  + (f" on [v{f.version}]({links.model(config.model_name, f.version)})" if f.version else "")
                  + " |" for f in result.repairs]
    if result.closed_runs:
        lines += ["", "Runs left RUNNING by a crashed cycle, ended FAILED: "
                  + ", ".join(f"[`{r}`]({run_page(r)})" for r in result.closed_runs)]
    return padded("\n".join(lines))


@dataclass(frozen=True)
class DoctorReport:
    model_name: str
    diagnosis: Diagnosis
    crashed_runs: list[str]
    lease: str | None
    repaired: Reconciled | None
    undelivered: list[dict[str, Any]]  # notifications nobody received (`outbox`): shown, retried by the next send
    set_aside: list[str] = field(default_factory=list)  # corrupt intents kept for a person (`moves.corrupt_intents`)
    lease_holder_gone: str | None = None  # why the lease's holder is provably gone (it holds the lease no more)

    @property
    def healthy(self) -> bool:
        return self.diagnosis.healthy and not self.crashed_runs

    def to_dict(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "healthy": self.healthy, **self.diagnosis.to_dict(),
                "crashed_runs": self.crashed_runs, "lease": self.lease, "lease_holder_gone": self.lease_holder_gone,
                "repaired": None if self.repaired is None else self.repaired.to_dict(),
                "undelivered": self.undelivered, "set_aside": self.set_aside}


def doctor(config: Config, fix: bool = False) -> DoctorReport:
    """The invariants, checked; with `fix`, repaired under the lease (and audited), then checked again."""
    registry = Registry(config)
    registry.require()
    repaired = None
    if fix:
        with registry.hold(config.registry.lease_ttl):
            repaired = reconcile(config, registry, utcnow().replace(tzinfo=None))
    held = registry.lease_state()
    shown, gone = held_by(held) if held is not None else (None, None)
    lease = None if shown is None else f"held by {shown}"
    # while a cycle holds the lease its run is RUNNING by right: only a free lease (or a dead holder's) makes one a crash
    stale = [] if held and gone is None else [r.info.run_id for r in crashed_runs(config, set())]
    undelivered = outbox.listed(registry.client, config.model_name)
    return DoctorReport(config.model_name, examine(registry, utcnow().replace(tzinfo=None)), stale, lease, repaired,
                        undelivered, corrupt_intents(registry), gone)
