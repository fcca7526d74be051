"""Stage and alias moves, together: Production <=> alias `production`, Staging <=> alias `staging`.

A move is several registry calls (tags, a stage transition, an alias, the old holder archived) and a
process can die between any two. So every move is first recorded as an *intent* on the registered
model (tag `retrain.intent`: what moves where, the tags it writes, the data time and the clock),
then carried out in steps that are each safe to repeat, then the intent is cleared. Whoever finds
an intent left behind (the next cycle, `doctor --repair`) finishes it with the same code: a move
cut short is always completed, never half-done and never done twice.

Versions are never deleted: a replaced or rejected version is archived. With `use_stages: false`
only the aliases move.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime

from mlflow.exceptions import MlflowException

from mlflow_retrain import tags as T
from mlflow_retrain.registry.versions import ARCHIVED, PRODUCTION, STAGING, VersionInfo, Versions, not_found, utcnow

PROMOTE, ARCHIVE, STAGE = "promote", "archive", "stage"


# How a unique-constraint clash reads: sqlite says "(sqlite3.IntegrityError) UNIQUE constraint
# failed", PostgreSQL "(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint"
_CLASH = re.compile(r"IntegrityError|UniqueViolation|unique constraint|duplicate key", re.IGNORECASE)


def _retry(action, attempts: int = 5):
    """First-time alias creation from concurrent processes can hit a unique constraint: retry."""
    for attempt in range(attempts):
        try:
            return action()
        except MlflowException as exc:
            if attempt == attempts - 1 or not _CLASH.search(str(exc)):
                raise
            time.sleep(0.05 * (attempt + 1))
    return None


@dataclass(frozen=True)
class Intent:
    """A move as plain data: enough to finish it from any point, by anyone."""

    action: str  # promote | archive | stage
    version: str
    previous: str | None  # the version the move displaces (Production for promote, Staging for stage)
    when: str  # data time the move applies to (the cycle's --as-of)
    wall: str  # the clock when it was decided
    tags: dict[str, str] = field(default_factory=dict)  # written on `version`
    previous_tags: dict[str, str] = field(default_factory=dict)  # written on `previous`
    by: str = ""  # the run that decided it

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Intent":
        return cls(**json.loads(text))

    def describe(self) -> str:
        moved = {PROMOTE: "to Production", ARCHIVE: "to Archived", STAGE: "to Staging"}[self.action]
        return f"v{self.version} {moved}" + (f" (displacing v{self.previous})" if self.previous else "")


class Moves:
    def __init__(self, versions: Versions):
        self.versions = versions
        self.client, self.name = versions.client, versions.name

    # ---- intents --------------------------------------------------------------------------------
    def pending(self) -> Intent | None:
        """The move a process started and did not finish, if any."""
        text = self.versions.model_tags().get(T.INTENT)
        return Intent.from_json(text) if text else None

    def carry_out(self, intent: Intent) -> None:
        """Record the intent, then finish it: the only way any move is made."""
        self.versions.tag_model({T.INTENT: intent.to_json()})
        self.finish(intent)

    def finish(self, intent: Intent) -> None:
        """Every step again, each a no-op when already done; then the intent is cleared."""
        {PROMOTE: self._promote, ARCHIVE: self._archive, STAGE: self._stage_candidate}[intent.action](intent)
        self.versions.untag_model(T.INTENT)

    def _intent(self, action: str, version: str, previous: VersionInfo | None, when: datetime | None,
                tags: dict[str, str] | None, previous_tags: dict[str, str] | None, by: str) -> Intent:
        other = previous.version if previous is not None and previous.version != str(version) else None
        return Intent(action, str(version), other, (when or utcnow()).isoformat(), utcnow().isoformat(),
                      {k: str(v)[:2000] for k, v in (tags or {}).items()},
                      dict(previous_tags or {}) if other else {}, by)

    # ---- the three moves ------------------------------------------------------------------------
    def promote(self, version: str, when: datetime | None = None, tags: dict[str, str] | None = None,
                previous_tags: dict[str, str] | None = None, by: str = "") -> VersionInfo | None:
        """Version → Production (stage + alias); the previous Production is archived. Returns it."""
        previous = self.versions.production()
        self.carry_out(self._intent(PROMOTE, version, previous, when, tags, previous_tags, by))
        return previous if previous is not None and previous.version != str(version) else None

    def stage_candidate(self, version: str, tags: dict[str, str] | None = None, by: str = "") -> None:
        """Version → Staging (stage + alias); a Staging version it replaces is archived, not left dangling."""
        self.carry_out(self._intent(STAGE, version, self.versions.staging(), None, tags, None, by))

    def archive(self, version: str, when: datetime | None = None, tags: dict[str, str] | None = None,
                by: str = "") -> None:
        self.carry_out(self._intent(ARCHIVE, version, None, when, tags, None, by))

    # ---- idempotent steps -------------------------------------------------------------------------
    def _promote(self, i: Intent) -> None:
        self.write_tags(i.version, {**i.tags, T.PROMOTED_AT: i.when, T.PROMOTED_WALL: i.wall})
        self.set_stage(i.version, PRODUCTION, archive_existing=True)
        self.set_alias(PRODUCTION, i.version)
        self.drop_alias(STAGING, i.version)
        if i.previous:
            self._retire(i.previous, i, i.previous_tags)

    def _stage_candidate(self, i: Intent) -> None:
        self.write_tags(i.version, i.tags)
        if i.previous:
            replaced = self.versions.get(i.previous)
            why = {}
            if replaced.tags.get(T.DECISION) == T.PENDING:
                why = {T.DECISION: T.ABANDONED, T.DECISION_REASON: f"superseded in Staging by v{i.version} "
                                                                   "before it was judged"}
            elif replaced.tags.get(T.DECISION) == T.AWAITING_APPROVAL:  # only a forced retrain does this
                why = {T.DECISION: T.SUPERSEDED, T.DECISION_REASON: f"superseded in Staging by v{i.version} "
                                                                    "while it awaited approval"}
            self._retire(i.previous, i, why)
        self.set_stage(i.version, STAGING)
        self.set_alias(STAGING, i.version)

    def _archive(self, i: Intent) -> None:
        self._retire(i.version, i, i.tags)

    def _retire(self, version: str, i: Intent, tags: dict[str, str]) -> None:
        """Archived: stage, no alias, `archived_at` in the move's data time."""
        self.write_tags(version, {**tags, T.ARCHIVED_AT: i.when})
        self.set_stage(version, ARCHIVED)
        for stage in (STAGING, PRODUCTION):
            self.drop_alias(stage, version)

    def write_tags(self, version: str, values: dict[str, str]) -> None:
        have = self.versions.get(version).tags
        self.versions.tag(version, {k: v for k, v in values.items() if have.get(k) != v})

    def set_stage(self, version: str, stage: str, archive_existing: bool = False) -> None:
        if not self.versions.config.registry.use_stages:
            return
        holders = [v.version for v in self.versions.versions() if v.stage == stage and v.version != str(version)]
        if self.versions.get(version).stage != stage:
            self.versions.before_write(f"stage {stage}")
            self._transition(version, stage)
        # MLflow's `archive_existing_versions=True` fails on PostgreSQL whenever the version reaches
        # the store as a string, which it always does through a tracking server (mlflow#24592:
        # "operator does not exist: integer <> character varying"). So the other holders are archived
        # one by one, after the move: readers of the stage see the new version from then on (the
        # highest version wins), never an empty stage; a crash in between is finished by the intent.
        for holder in holders if archive_existing else ():
            self.versions.before_write(f"stage {ARCHIVED}")
            self._transition(holder, ARCHIVED)

    def _transition(self, version: str, stage: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self.client.transition_model_version_stage(self.name, str(version), stage)

    def set_alias(self, stage: str, version: str) -> None:
        alias = self.versions.aliases[stage]
        if str(self.client.get_registered_model(self.name).aliases.get(alias)) == str(version):
            return
        self.versions.before_write(f"alias {alias}")
        _retry(lambda: self.client.set_registered_model_alias(self.name, alias, str(version)))

    def drop_alias(self, stage: str, version: str) -> None:
        alias = self.versions.aliases[stage]
        if str(self.client.get_registered_model(self.name).aliases.get(alias)) != str(version):
            return
        self.versions.before_write(f"drop alias {alias}")
        try:
            self.client.delete_registered_model_alias(self.name, alias)
        except MlflowException as exc:
            if not not_found(exc):
                raise
