"""The only module that talks to the MLflow Model Registry.

Stages are deprecated in MLflow 3 but still what most teams look at, so every move sets the stage
AND the alias (`production`, `staging`); reads trust the alias first so the tool keeps working once
stages are gone (`registry.use_stages: false` runs on aliases alone). Versions are never deleted:
a replaced or rejected version is archived.

MLflow has no compare-and-set, so concurrent cycles are serialised by a *lease*: a registered model
named after ours, whose creation is atomic in every backend (a unique name), with an expiry so a
crashed holder does not block forever.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlflow_retrain import tags as T
from mlflow_retrain.config import Config
from mlflow_retrain.errors import LeaseHeldError, RegistryError

log = logging.getLogger(__name__)

PRODUCTION, STAGING, ARCHIVED, NONE = "Production", "Staging", "Archived", "None"


@dataclass(frozen=True)
class VersionInfo:
    """A model version as plain data (what decisions and tables need)."""

    version: str
    stage: str
    aliases: tuple[str, ...]
    run_id: str
    source: str
    created_at: datetime
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def number(self) -> int:
        return int(self.version)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version, "stage": self.stage, "aliases": list(self.aliases), "run_id": self.run_id,
            "created_at": self.created_at.isoformat(), "tags": dict(self.tags),
        }


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    expires: datetime


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _not_found(exc: MlflowException) -> bool:
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


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


class Registry:
    """Stage + alias moves, tags and the lease for one registered model."""

    def __init__(self, config: Config, client: MlflowClient | None = None):
        self.config = config
        self.name = config.model_name
        self.client = client or MlflowClient()
        self.aliases = {PRODUCTION: config.registry.production_alias, STAGING: config.registry.staging_alias}

    # ---- reads -------------------------------------------------------------------------------
    def exists(self) -> bool:
        try:
            self.client.get_registered_model(self.name)
            return True
        except MlflowException as exc:
            if _not_found(exc):
                return False
            raise

    def require(self) -> None:
        if not self.exists():
            raise RegistryError(
                f"registered model {self.name!r} does not exist; check model_name or run `mlflow-retrain train` first"
            )

    def _info(self, mv: Any, aliases: tuple[str, ...] | None = None) -> VersionInfo:
        aliases = tuple(mv.aliases) if aliases is None else aliases
        stage = mv.current_stage or NONE
        if not self.config.registry.use_stages:
            stage = next((s for s, a in self.aliases.items() if a in aliases), NONE)
            if stage == NONE and T.ARCHIVED_AT in mv.tags:
                stage = ARCHIVED
        return VersionInfo(
            version=str(mv.version), stage=stage, aliases=aliases, run_id=mv.run_id or "", source=mv.source or "",
            created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, timezone.utc), tags=dict(mv.tags),
        )

    def get(self, version: str | int) -> VersionInfo:
        try:
            return self._info(self.client.get_model_version(self.name, str(version)))
        except MlflowException as exc:
            if _not_found(exc):
                raise RegistryError(f"model {self.name!r} has no version {version}; see `mlflow-retrain status`") from None
            raise

    def in_stage(self, stage: str) -> VersionInfo | None:
        """The version holding a stage: by alias first (survives the end of stages), then by stage."""
        try:
            return self._info(self.client.get_model_version_by_alias(self.name, self.aliases[stage]))
        except MlflowException as exc:
            if not _not_found(exc):
                raise
        if not self.config.registry.use_stages:
            return None
        holders = [v for v in self.versions() if v.stage == stage]
        return max(holders, key=lambda v: v.number) if holders else None

    def production(self) -> VersionInfo | None:
        return self.in_stage(PRODUCTION) if self.exists() else None

    def staging(self) -> VersionInfo | None:
        return self.in_stage(STAGING) if self.exists() else None

    def versions(self) -> list[VersionInfo]:
        """All versions, newest first, with their aliases (search results carry none)."""
        if not self.exists():
            return []
        by_version: dict[str, list[str]] = {}
        for alias, version in self.client.get_registered_model(self.name).aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        found = self.client.search_model_versions(f"name = '{self.name}'")
        infos = [self._info(mv, tuple(sorted(by_version.get(str(mv.version), [])))) for mv in found]
        return sorted(infos, key=lambda v: v.number, reverse=True)

    def model_tags(self) -> dict[str, str]:
        return dict(self.client.get_registered_model(self.name).tags) if self.exists() else {}

    # ---- writes ------------------------------------------------------------------------------
    def register(self, model_uri: str, model_id: str, run_id: str, tags: dict[str, str]) -> VersionInfo:
        if not self.exists():
            try:
                self.client.create_registered_model(
                    self.name, description="Managed by mlflow-retrain: see the retrain.* tags on each version.")
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
        mv = self.client.create_model_version(self.name, model_uri, run_id=run_id, tags=tags, model_id=model_id)
        return self._info(mv, ())

    def tag(self, version: str, values: dict[str, str]) -> None:
        for key, value in values.items():
            self.client.set_model_version_tag(self.name, str(version), key, str(value))

    def tag_model(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self.client.set_registered_model_tag(self.name, key, str(value))

    def _stage(self, version: str, stage: str, archive_existing: bool = False) -> None:
        if not self.config.registry.use_stages:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            # int version: PostgreSQL + archive_existing_versions fails on a string (mlflow#24592)
            self.client.transition_model_version_stage(self.name, int(version), stage,
                                                       archive_existing_versions=archive_existing)

    def _drop_alias(self, stage: str, version: str) -> None:
        alias = self.aliases[stage]
        if str(self.client.get_registered_model(self.name).aliases.get(alias)) == str(version):
            self.client.delete_registered_model_alias(self.name, alias)

    def promote(self, version: str, when: datetime | None = None) -> VersionInfo | None:
        """Version → Production (stage + alias); the previous Production is archived. Returns it."""
        previous = self.production()
        self._stage(version, PRODUCTION, archive_existing=True)
        _retry(lambda: self.client.set_registered_model_alias(self.name, self.aliases[PRODUCTION], str(version)))
        self._drop_alias(STAGING, version)
        stamp = (when or utcnow()).isoformat()
        self.tag(version, {T.PROMOTED_AT: stamp, T.PROMOTED_WALL: utcnow().isoformat()})
        if previous is not None and previous.version != str(version):
            self.tag(previous.version, {T.ARCHIVED_AT: stamp})
            if self.config.registry.use_stages and self.get(previous.version).stage != ARCHIVED:
                self._stage(previous.version, ARCHIVED)
        return previous if previous is not None and previous.version != str(version) else None

    def stage_candidate(self, version: str) -> None:
        """Version → Staging (stage + alias); a Staging version it replaces is archived, not left dangling."""
        self._stage(version, STAGING, archive_existing=True)
        _retry(lambda: self.client.set_registered_model_alias(self.name, self.aliases[STAGING], str(version)))

    def archive(self, version: str, when: datetime | None = None) -> None:
        self._stage(version, ARCHIVED)
        for stage in (STAGING, PRODUCTION):
            self._drop_alias(stage, version)
        self.tag(version, {T.ARCHIVED_AT: (when or utcnow()).isoformat()})

    # ---- lease -------------------------------------------------------------------------------
    @property
    def lease_name(self) -> str:
        return f"{self.name}.retrain-lease"

    def acquire_lease(self, ttl: timedelta, holder: str | None = None) -> Lease:
        """Create the lease object; if it exists and has expired, exactly one taker replaces it."""
        holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        for _ in range(3):
            expires = utcnow() + ttl
            try:
                self.client.create_registered_model(
                    self.lease_name,
                    tags={T.LEASE_FOR: self.name, T.LEASE_HOLDER: holder, T.LEASE_EXPIRES: expires.isoformat()},
                    description=f"Lease of a running mlflow-retrain cycle on {self.name}; removed when it ends.",
                )
                return Lease(self.lease_name, holder, expires)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            current = self.lease_state()
            if current is None:
                continue  # released meanwhile: try again
            other = current.get(T.LEASE_HOLDER, "?")
            until = datetime.fromisoformat(current.get(T.LEASE_EXPIRES, utcnow().isoformat()))
            if until > utcnow():
                raise LeaseHeldError(
                    f"another cycle holds the lease on {self.name!r} ({other}, until {until.isoformat(timespec='seconds')}); "
                    "it will finish or expire, try again later"
                )
            self._take_over(other)
        raise LeaseHeldError(f"could not take the lease on {self.name!r}: it keeps changing hands; try again later")

    def _take_over(self, expired_holder: str) -> None:
        """Only the process that creates the takeover marker for this expired holder may delete its lease."""
        marker = f"{self.lease_name}.takeover.{expired_holder.replace(':', '-')}"
        try:
            self.client.create_registered_model(marker, tags={T.LEASE_FOR: self.name})
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_ALREADY_EXISTS":
                raise LeaseHeldError(f"another cycle is taking over the expired lease on {self.name!r}; try again later") from None
            raise
        # The marker stays: deleting it would let a late reader of the old tags take over again.
        log.warning("lease of %s expired; taking it over", expired_holder)
        try:
            self.client.delete_registered_model(self.lease_name)
        except MlflowException as exc:
            if not _not_found(exc):
                raise

    def lease_state(self) -> dict[str, str] | None:
        """The lease's tags (holder, expiry), or None when nobody holds it."""
        try:
            return dict(self.client.get_registered_model(self.lease_name).tags)
        except MlflowException as exc:
            if _not_found(exc):
                return None
            raise

    def release_lease(self, lease: Lease) -> None:
        """Remove the lease if it is still ours (it may have expired and been taken over)."""
        current = self.lease_state()
        if current is not None and current.get(T.LEASE_HOLDER) == lease.holder:
            self.client.delete_registered_model(lease.name)
