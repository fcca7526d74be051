"""The registry as plain data, diagnosed by `decide.invariants.diagnose`; the repairs it lists are
carried out by `loop.moves.repair`, the one module that moves versions."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from mlflow_retrain.decide.invariants import Diagnosis, VersionState, diagnose
from mlflow_retrain.adapters.registry.moves import CorruptIntent

if TYPE_CHECKING:
    from mlflow_retrain.adapters.registry import Registry


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
