"""The only package that talks to the MLflow Model Registry, in three small pieces behind `Registry`:

- `versions`: reads (by alias first, then by stage), registration, and the audit tags (`tags.py`);
- `moves`: stage and alias moves together (promote, stage a candidate, archive); never a delete;
- `lease`: the lease that serialises cycles (a unique-name registered model with an expiry).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from mlflow.tracking import MlflowClient

from mlflow_retrain.config import Config
from mlflow_retrain.registry.lease import Lease, Leases
from mlflow_retrain.registry.moves import Moves
from mlflow_retrain.registry.versions import ARCHIVED, NONE, PRODUCTION, STAGING, VersionInfo, Versions, utcnow

__all__ = ["ARCHIVED", "NONE", "PRODUCTION", "STAGING", "Lease", "Registry", "VersionInfo", "utcnow"]


class Registry(Versions):
    """One registered model: its versions (reads, tags), their moves and the lease."""

    def __init__(self, config: Config, client: MlflowClient | None = None):
        super().__init__(config, client)
        self.moves = Moves(self)
        self.lease = Leases(self.client, self.name)

    def promote(self, version: str, when: datetime | None = None) -> VersionInfo | None:
        return self.moves.promote(version, when)

    def stage_candidate(self, version: str) -> None:
        self.moves.stage_candidate(version)

    def archive(self, version: str, when: datetime | None = None) -> None:
        self.moves.archive(version, when)

    @property
    def lease_name(self) -> str:
        return self.lease.name

    def acquire_lease(self, ttl: timedelta, holder: str | None = None) -> Lease:
        return self.lease.acquire(ttl, holder)

    def lease_state(self) -> dict[str, str] | None:
        return self.lease.state()

    def release_lease(self, lease: Lease) -> None:
        self.lease.release(lease)
