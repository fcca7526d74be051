"""Carry out the repairs `decide.invariants.diagnose` lists, until the registry is healthy."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from mlflow_retrain.base import tags as T
from mlflow_retrain.decide.invariants import (ABANDON, DROP_ALIAS, FINISH_INTENT, SET_ALIAS, SET_ASIDE_INTENT,
                                              SET_STAGE, STAGE_PENDING, TAG, UNDO_HAND_MOVE, Diagnosis, Finding,
                                              VersionState, diagnose)
from mlflow_retrain.adapters.registry.moves import CorruptIntent

if TYPE_CHECKING:
    from mlflow_retrain.adapters.registry import Registry

log = logging.getLogger(__name__)


def examine(registry: "Registry", now: datetime, intent: bool = True) -> Diagnosis:
    """The registry as plain data, diagnosed. A model that does not exist yet is healthy. Without
    `intent`, what remains once a move left behind is finished (a dry run's view)."""
    if not registry.exists():
        return Diagnosis([])
    model = registry.client.get_registered_model(registry.name)
    left, corrupt = None, None
    try:
        left = registry.moves.pending() if intent else None
    except CorruptIntent as exc:
        corrupt = str(exc)
    states = [VersionState(v.version, v.stage, v.tags) for v in registry.versions()]
    return diagnose(states, {a: str(v) for a, v in model.aliases.items()},
                    left.describe() if left else None, use_stages=registry.config.registry.use_stages,
                    production_alias=registry.config.registry.production_alias,
                    staging_alias=registry.config.registry.staging_alias, now=now.isoformat(), corrupt_intent=corrupt)


def repair(registry: "Registry", now: datetime, by: str = "", passes: int = 5) -> list[Finding]:
    """Repair until healthy (each repair can reveal the next, e.g. a finished intent); returns what was done."""
    done: list[Finding] = []
    for _ in range(passes):
        diagnosis = examine(registry, now)
        if diagnosis.healthy:
            return done
        for finding in diagnosis.findings:
            log.warning("repairing %s: %s", registry.name, finding.problem)
            _apply(registry, finding, now, by)
            done.append(finding)
    raise RuntimeError(f"the registry of {registry.name!r} is still inconsistent after {passes} repair passes: "
                       f"{[f.problem for f in examine(registry, now).findings]}")


def _apply(registry: "Registry", finding: Finding, now: datetime, by: str) -> None:
    moves = registry.moves
    version = finding.version or ""
    if finding.repair == FINISH_INTENT:
        intent = moves.pending()
        if intent is not None:
            moves.finish(intent)
    elif finding.repair == SET_ASIDE_INTENT:
        moves.set_aside(by)
    elif finding.repair == UNDO_HAND_MOVE:
        moves.undo_hand_move(version, finding.values["found"], finding.values["restore"] or None, now, by)
    elif finding.repair == SET_STAGE:
        moves.set_stage(version, finding.values["stage"])
    elif finding.repair == SET_ALIAS:
        moves.set_alias(finding.values["stage"], version)
    elif finding.repair == DROP_ALIAS:
        moves.drop_alias(finding.values["stage"], version)
    elif finding.repair == TAG:
        moves.write_tags(version, finding.values)
    elif finding.repair == STAGE_PENDING:
        moves.stage_candidate(version, by=by)
    elif finding.repair == ABANDON:
        moves.archive(version, when=now, by=by, tags=finding.values or {
            T.DECISION: T.ABANDONED, T.DECISION_REASON: "pending, superseded by a newer candidate before it was judged"})
    else:
        raise ValueError(f"unknown repair {finding.repair!r}")
