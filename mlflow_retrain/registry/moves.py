"""Stage and alias moves, together: Production <=> alias `production`, Staging <=> alias `staging`.

Versions are never deleted: a replaced or rejected version is archived. With `use_stages: false`
only the aliases move.
"""

from __future__ import annotations

import time
import warnings
from datetime import datetime

from mlflow.exceptions import MlflowException

from mlflow_retrain import tags as T
from mlflow_retrain.registry.versions import ARCHIVED, PRODUCTION, STAGING, VersionInfo, Versions, utcnow


def _retry(action, attempts: int = 5):
    """First-time alias creation from concurrent processes can hit a unique constraint: retry."""
    for attempt in range(attempts):
        try:
            return action()
        except MlflowException as exc:
            if attempt == attempts - 1 or "IntegrityError" not in str(exc) and "UNIQUE" not in str(exc):
                raise
            time.sleep(0.05 * (attempt + 1))
    return None


class Moves:
    def __init__(self, versions: Versions):
        self.versions = versions
        self.client, self.name = versions.client, versions.name

    def _stage(self, version: str, stage: str, archive_existing: bool = False) -> None:
        if not self.versions.config.registry.use_stages:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            # int version: PostgreSQL + archive_existing_versions fails on a string (mlflow#24592)
            self.client.transition_model_version_stage(self.name, int(version), stage,
                                                       archive_existing_versions=archive_existing)

    def _alias(self, stage: str, version: str) -> None:
        _retry(lambda: self.client.set_registered_model_alias(self.name, self.versions.aliases[stage], str(version)))

    def _drop_alias(self, stage: str, version: str) -> None:
        alias = self.versions.aliases[stage]
        if str(self.client.get_registered_model(self.name).aliases.get(alias)) == str(version):
            self.client.delete_registered_model_alias(self.name, alias)

    def promote(self, version: str, when: datetime | None = None) -> VersionInfo | None:
        """Version → Production (stage + alias); the previous Production is archived. Returns it."""
        previous = self.versions.production()
        self._stage(version, PRODUCTION, archive_existing=True)
        self._alias(PRODUCTION, version)
        self._drop_alias(STAGING, version)
        stamp = (when or utcnow()).isoformat()
        self.versions.tag(version, {T.PROMOTED_AT: stamp, T.PROMOTED_WALL: utcnow().isoformat()})
        if previous is not None and previous.version != str(version):
            self.versions.tag(previous.version, {T.ARCHIVED_AT: stamp})
            if self.versions.config.registry.use_stages and self.versions.get(previous.version).stage != ARCHIVED:
                self._stage(previous.version, ARCHIVED)
        return previous if previous is not None and previous.version != str(version) else None

    def stage_candidate(self, version: str) -> None:
        """Version → Staging (stage + alias); a Staging version it replaces is archived, not left dangling."""
        self._stage(version, STAGING, archive_existing=True)
        self._alias(STAGING, version)

    def archive(self, version: str, when: datetime | None = None) -> None:
        self._stage(version, ARCHIVED)
        for stage in (STAGING, PRODUCTION):
            self._drop_alias(stage, version)
        self.versions.tag(version, {T.ARCHIVED_AT: (when or utcnow()).isoformat()})
