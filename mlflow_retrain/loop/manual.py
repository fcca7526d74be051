"""Moves by a person: `promote` and `rollback` here, `approve` and `reject` in `signoff.py`, all on
one path. Checked before the lease (the reason, the data time, the store, the version); then under
the lease and after a reconcile (`reconcile.reconciled`), the move is made (`loop.moves`) inside an
audit run of its own kind (`audited`); then the policy's `notify:` targets are told (`told`).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pandas as pd

from mlflow_retrain.adapters.data import LabelledData
from mlflow_retrain.adapters.registry import Registry, VersionInfo, utcnow
from mlflow_retrain.adapters.tracking import check_tracking, start_run
from mlflow_retrain.base import links
from mlflow_retrain.base import tags as T
from mlflow_retrain.base.errors import RegistryError, RetrainError
from mlflow_retrain.loop.moves import moved_by_hand
from mlflow_retrain.loop.reconcile import controller_experiment, reconciled
from mlflow_retrain.policy.config import Config

log = logging.getLogger(__name__)


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


def opened(config: Config, as_of: str | None) -> tuple[pd.Timestamp, Registry]:
    """Before the lease: the move's data time, a store that answers, and a model that exists."""
    when = move_time(config, as_of)
    check_tracking()
    registry = Registry(config)
    registry.require()
    return when, registry


@dataclass
class Record:
    """A move by hand's audit run, as the move fills it in: its tags and its `decision.json`."""

    run_id: str
    wall: str  # the clock when the run opened
    tags: dict[str, str] = field(default_factory=dict)
    decision: dict[str, Any] = field(default_factory=dict)


@contextmanager
def audited(config: Config, registry: Registry, action: str, title: str, when: pd.Timestamp,
            tags: dict[str, str] | None = None) -> Iterator[Record]:
    """The move's run (kind `action`) in the controller's experiment. Once the block has moved and
    filled the record: the versions' pages, the run's tags and `decision.json`, the model's last move."""
    import mlflow

    with start_run(controller_experiment(config), title,
                   {T.RUN_KIND: action, "model_name": config.model_name, T.AS_OF: when.isoformat(),
                    **(tags or {})}) as run:
        record = Record(run.info.run_id, utcnow().isoformat(timespec="seconds"))
        yield record
        registry.describe()
        mlflow.set_tags(record.tags)
        mlflow.log_dict(record.decision, "decision.json")
        registry.tag_model({T.LAST_CYCLE: f"{record.run_id} {action}"})


def told(config: Config, action: str, version: str, previous: str | None, reason: str, run_id: str,
         by: str = "") -> None:
    """The policy's `notify:` targets hear of every move a person made, as they hear of a cycle's."""
    from mlflow_retrain.adapters.notify import move_event, notify

    notify(config, [move_event(config.model_name, action, version, previous, reason, run_id, by)], run_id=run_id)


def _manual(config: Config, action: str, version: str, reason: str, as_of: str | None,
            pick: Callable[[Registry], VersionInfo] | None = None) -> ManualMove:
    if not reason.strip():
        raise RetrainError(f"{action} needs --reason \"...\": every move of Production records why")
    when, registry = opened(config, as_of)
    target = pick(registry) if pick else registry.get(version)
    production = registry.production()
    if production is not None and production.version == target.version:
        raise RegistryError(f"version {target.version} is already in Production")
    with reconciled(config, registry, when.to_pydatetime()):
        production = registry.production()
        title = manual_title(action, target, production)
        note = manual_description(config, title, when, reason, target, production)
        with audited(config, registry, action, title, when, {"mlflow.note.content": note}) as record:
            previous = moved_by_hand(registry, action, target, production, reason, when, by=record.run_id)
            move = ManualMove(action, target.version, previous.version if previous else None, reason,
                              record.run_id, when.isoformat(), record.wall)
            record.tags = {"outcome": action, "production_version": move.previous or "",
                           "candidate_version": target.version, "reason": reason}
            record.decision = move.to_dict()
    told(config, action, move.version, move.previous, reason, move.run_id)
    return move


def manual_title(action: str, target: VersionInfo, production: VersionInfo | None) -> str:
    """A move by hand's run name: `rollback to v6 from v7`, `v5 promoted by hand, replacing v7`."""
    was = f"v{production.version}" if production else "none"
    if action == "rollback":
        return f"rollback to v{target.version} from {was}"
    return f"v{target.version} {action}d by hand, replacing {was}"


def manual_description(config: Config, title: str, when: pd.Timestamp, reason: str, target: VersionInfo,
                       production: VersionInfo | None) -> str:
    pages = ", ".join(f"[v{v.version}]({links.model(config.model_name, v.version)})"
                      for v in (target, production) if v is not None)
    return (f"{title}\n\nMoved by hand as of `{when.isoformat()}` on `{config.model_name}`, because: "
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
