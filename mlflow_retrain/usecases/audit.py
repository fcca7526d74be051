"""Read the audit trail back: what is in Production and why, and what each cycle decided.

"Not knowing when your model was retrained leads to issues": these are the answers, built from the
version tags and the controller's runs, never from memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from mlflow_retrain.adapters import outbox
from mlflow_retrain.base import links
from mlflow_retrain.base import tags as T
from mlflow_retrain.policy.config import Config
from mlflow_retrain.decide.approval import sign_off_help
from mlflow_retrain.adapters.registry import Registry, VersionInfo
from mlflow_retrain.adapters.registry.lease import held_by

VERSION_TAGS = (T.TRIGGER, T.REASON, T.DECISION, T.DECISION_REASON, T.BASELINE_VERSION, T.TRAIN_WINDOW)


def version_row(version: VersionInfo, holdout: dict[str, float] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"version": version.version, "stage": version.stage, "aliases": ",".join(version.aliases)}
    row.update({key.removeprefix("retrain."): version.tags.get(key, "") for key in VERSION_TAGS})
    if holdout:
        row.update({f"holdout_{k}": v for k, v in holdout.items()})
    return row


def _holdout_metrics(run_id: str) -> dict[str, float]:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        metrics = MlflowClient().get_run(run_id).data.metrics
    except MlflowException:
        return {}
    return {k.removeprefix("holdout_"): v for k, v in metrics.items() if k.startswith("holdout_")}


LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store by default


@dataclass(frozen=True)
class Status:
    model_name: str
    production: dict[str, Any] | None
    staging: dict[str, Any] | None
    versions: list[dict[str, Any]]
    last_cycle: str | None
    lease: str | None
    undelivered: list[dict[str, Any]]  # messages no notify target received yet (`outbox`): the next send retries
    awaiting: dict[str, Any] | None  # the Staging candidate awaiting a person: since, expires, how to sign off
    pages: dict[str, str]  # where to look in the MLflow UI (`ui_pages`)
    challenger: dict[str, Any] | None = None  # the challenger in Staging: its rounds so far (`loop.challenger`)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def status(config: Config) -> Status:
    registry = Registry(config)
    registry.require()
    versions = registry.versions()
    production, staging = registry.production(), registry.staging()

    def described(version: VersionInfo | None) -> dict[str, Any] | None:
        return None if version is None else version_row(version, _holdout_metrics(version.run_id))

    held = registry.lease_state()
    lease = None if held is None else held_by(held)[0]
    undelivered = outbox.listed(registry.client, config.model_name)
    awaiting = None
    if staging is not None and staging.tags.get(T.DECISION) == T.AWAITING_APPROVAL:
        since = staging.tags.get(T.AWAITING_SINCE)
        awaiting = sign_off_help(config.model_name, staging.version, datetime.fromisoformat(since) if since else None,
                                 config.validation.approval_ttl, str(config.source or "retrain.yaml"))
    return Status(config.model_name, described(production), described(staging),
                  [version_row(v) for v in versions], registry.model_tags().get(T.LAST_CYCLE), lease, undelivered,
                  awaiting, ui_pages(config), _challenger(config, staging))


def _challenger(config: Config, staging: VersionInfo | None) -> dict[str, Any] | None:
    """The challenger's score so far: its rounds against Production and what they decide yet."""
    from mlflow_retrain.decide.challenge import verdict
    from mlflow_retrain.loop.challenger import rounds

    if staging is None or staging.tags.get(T.DECISION) != T.CHALLENGER:
        return None
    played = rounds(staging)
    rule = config.validation.challenger
    return {"version": staging.version, "since": staging.tags.get(T.CHALLENGER_SINCE, ""),
            "wins": sum(r.won for r in played), "played": len(played), "rounds": [r.__dict__ for r in played],
            "needs": None if rule is None else f"{rule.wins} of {rule.windows}",
            "so_far": verdict(rule, played, config.metric).reason if rule is not None else
            "validation.challenger is off: the next cycle archives it"}


def ui_pages(config: Config) -> dict[str, str]:
    """The cycles (the controller's runs tab) and the model in the MLflow UI, in its model-training
    mode: under the UI's address when known (`ui_url`, a server), else under `mlflow ui`'s default."""
    import mlflow

    from mlflow_retrain.adapters.notify import ui_base
    from mlflow_retrain.loop.reconcile import controller_experiment

    base = ui_base(config, mlflow.get_tracking_uri()) or LOCAL_UI
    pages = {"model": links.absolute(base, links.model(config.model_name))}
    experiment = mlflow.get_experiment_by_name(controller_experiment(config))
    if experiment is not None:
        pages["cycles"] = links.absolute(base, links.experiment(experiment.experiment_id))
    return pages


def history(config: Config, limit: int = 50) -> list[dict[str, Any]]:
    """The controller's runs, newest first, with the versions they produced and why."""
    import mlflow

    from mlflow_retrain.loop.reconcile import controller_experiment
    from mlflow_retrain.adapters.store import unborn

    if unborn(mlflow.get_tracking_uri()) is not None:  # no store yet: no cycle ran, and reading must not create it
        return []
    experiment = mlflow.get_experiment_by_name(controller_experiment(config))
    if experiment is None:
        return []
    runs = mlflow.search_runs(experiment_ids=[experiment.experiment_id], max_results=limit,
                              order_by=["attributes.start_time DESC"], output_format="list")
    rows = []
    for run in runs:
        tags = run.data.tags
        rows.append({
            "started": _iso(run.info.start_time), "kind": tags.get(T.RUN_KIND, ""), "as_of": tags.get(T.AS_OF, ""),
            "outcome": tags.get("outcome", run.info.status.lower()), "triggers": tags.get("triggers_fired", ""),
            "production": tags.get("production_version", ""), "candidate": tags.get("candidate_version", ""),
            "reason": tags.get("reason", ""), "run_id": run.info.run_id,
        })
    return rows


def _iso(millis: int | None) -> str:
    return "" if millis is None else datetime.fromtimestamp(millis / 1000, timezone.utc).isoformat(timespec="seconds")
