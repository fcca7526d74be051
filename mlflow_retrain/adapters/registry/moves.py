"""Stage and alias moves, together: Production <=> alias `production`, Staging <=> alias `staging`.

Why it is built this way: docs/design.md#adapters-registry-moves.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime

from mlflow.exceptions import MlflowException

from mlflow_retrain.base import tags as T
from mlflow_retrain.adapters.registry.versions import ARCHIVED, PRODUCTION, STAGING, VersionInfo, Versions, not_found, utcnow

PROMOTE, ARCHIVE, STAGE = "promote", "archive", "stage"
_NUMBER = re.compile(r"[1-9][0-9]{0,17}")  # a version number, ASCII digits only
_FIELDS = {"action": str, "version": str, "previous": (str, type(None)), "when": str, "wall": str, "tags": dict,
           "previous_tags": dict, "by": str}


class CorruptIntent(ValueError):
    """`retrain.intent` holds something this tool did not write: it is set aside, never finished."""


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
        """Strictly: every field present with its type, nothing else, a known action, version numbers,
        ISO 8601 times, tags of strings; anything else is `CorruptIntent` (finishing a guess could move
        Production). Whether the versions exist is `Moves.pending`'s check."""
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise CorruptIntent(f"not JSON ({getattr(exc, 'msg', type(exc).__name__)})") from None
        if not isinstance(raw, dict) or set(raw) != set(_FIELDS):
            got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
            raise CorruptIntent(f"not an intent: fields {got}, expected {sorted(_FIELDS)}")
        wrong = [name for name, kind in _FIELDS.items() if not isinstance(raw[name], kind)]
        wrong += [name for name in ("tags", "previous_tags") if name not in wrong
                  and not all(isinstance(k, str) and isinstance(v, str) for k, v in raw[name].items())]
        wrong += [name for name in ("version", "previous") if name not in wrong and raw[name] is not None
                  and not _NUMBER.fullmatch(raw[name])]
        if raw["action"] not in (PROMOTE, ARCHIVE, STAGE):
            wrong.append("action")
        for name in ("when", "wall"):
            try:
                datetime.fromisoformat(raw[name])
            except (TypeError, ValueError):
                wrong.append(name)
        if wrong:
            raise CorruptIntent(f"bad {', '.join(sorted(set(wrong)))}")
        return cls(**raw)

    def describe(self) -> str:
        moved = {PROMOTE: "to Production", ARCHIVE: "to Archived", STAGE: "to Staging"}[self.action]
        return f"v{self.version} {moved}" + (f" (displacing v{self.previous})" if self.previous else "")


_HAND_MOVE = re.compile(re.escape(T.HAND_MOVE) + r"\.([0-9]+)")
_SET_ASIDE = re.compile(re.escape(T.INTENT_CORRUPT) + r"\.[0-9]+")


def set_aside(model_tags: dict[str, str]) -> list[str]:
    """The corrupt intents set aside on a registered model, oldest first (their tags)."""
    return sorted((k for k in model_tags if _SET_ASIDE.fullmatch(k)), key=_number)


def _number(key: str) -> int:
    return int(key.rsplit(".", 1)[1])


class Moves:
    def __init__(self, versions: Versions):
        self.versions = versions
        self.client, self.name = versions.client, versions.name

    # ---- intents --------------------------------------------------------------------------------
    def pending(self) -> Intent | None:
        """The move a process started and did not finish, if any; `CorruptIntent` if the tag is not one."""
        text = self.versions.model_tags().get(T.INTENT)
        if not text:
            return None
        intent = Intent.from_json(text)
        known = {v.version for v in self.versions.versions()}
        missing = [v for v in (intent.version, intent.previous) if v is not None and v not in known]
        if missing:
            raise CorruptIntent(f"it names v{missing[0]}, which does not exist")
        return intent

    def set_aside(self, by: str) -> str | None:
        """A corrupt intent kept as found under `retrain.intent.corrupt.<n>` with a record of why, by
        which run and when (`.<n>.record`), then cleared: reported, never acted on, never lost. A pass
        cut short after keeping the text reuses its tag. Returns the tag, None if there was nothing to do."""
        tags = self.versions.model_tags()
        text = tags.get(T.INTENT)
        if not text:
            return None
        try:
            self.pending()
            return None
        except CorruptIntent as exc:
            why = str(exc)
        kept = set_aside(tags)
        if kept and tags[kept[-1]] == text:  # kept by a pass cut short before it cleared the intent
            key = kept[-1]
        else:
            key = f"{T.INTENT_CORRUPT}.{_number(kept[-1]) + 1 if kept else 1}"
        self.versions.tag_model({key: text})
        if f"{key}.record" not in tags:
            self.versions.tag_model({f"{key}.record": json.dumps({"why": why, "by": by, "wall": utcnow().isoformat()})})
        self.versions.untag_model(T.INTENT)
        return key

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

    def stage_candidate(self, version: str, tags: dict[str, str] | None = None, by: str = "",
                        previous_tags: dict[str, str] | None = None, when: datetime | None = None) -> None:
        """Version → Staging (stage + alias); a Staging version it replaces is archived, not left dangling
        (tagged `previous_tags` when given, else by why it was replaced)."""
        self.carry_out(self._intent(STAGE, version, self.versions.staging(), when, tags, previous_tags, by))

    def archive(self, version: str, when: datetime | None = None, tags: dict[str, str] | None = None,
                by: str = "") -> None:
        self.carry_out(self._intent(ARCHIVE, version, None, when, tags, None, by))

    def undo_hand_move(self, version: str, found: str, restore: str | None, when: datetime, by: str) -> None:
        """A version neither a gate nor a person approved, found in Production (moved by hand): the
        move is recorded on it as an appended `retrain.hand_move.<n>`, then the last audited Production
        `restore` gets the stage and alias back (no `promote`: that would stamp a promotion nobody
        decided), or with none, the version leaves Production. No audit tag is rewritten."""
        have = self.versions.get(version).tags
        n = 1 + max((int(m.group(1)) for k in have if (m := _HAND_MOVE.fullmatch(k))), default=0)
        self.versions.tag(version, {f"{T.HAND_MOVE}.{n}": json.dumps({
            "found": found, "decision": have.get(T.DECISION, ""), "restored": restore or "", "at": when.isoformat(),
            "wall": utcnow().isoformat(), "by": by})})
        if restore:
            self.set_stage(restore, PRODUCTION, archive_existing=True)
            self.set_alias(PRODUCTION, restore)
            self.drop_alias(STAGING, restore)
        else:
            if self.versions.get(version).stage == PRODUCTION:
                self.set_stage(version, ARCHIVED)
            self.drop_alias(PRODUCTION, version)

    # ---- idempotent steps -------------------------------------------------------------------------
    def _promote(self, i: Intent) -> None:
        self.write_tags(i.version, {**i.tags, T.PROMOTED_AT: i.when, T.PROMOTED_WALL: i.wall})
        self.set_stage(i.version, PRODUCTION, archive_existing=True)
        self.set_alias(PRODUCTION, i.version)
        self.drop_alias(STAGING, i.version)
        self.drop_alias(T.CHALLENGER, i.version)
        if i.previous:
            self._retire(i.previous, i, i.previous_tags)

    def _stage_candidate(self, i: Intent) -> None:
        self.write_tags(i.version, i.tags)
        if i.previous:
            replaced = self.versions.get(i.previous)
            why = dict(i.previous_tags)  # the mover's own record (a refit replacing its validated fit), else:
            if not why and replaced.tags.get(T.DECISION) == T.PENDING:
                why = {T.DECISION: T.ABANDONED, T.DECISION_REASON: f"superseded in Staging by v{i.version} "
                                                                   "before it was judged"}
            elif not why and replaced.tags.get(T.DECISION) == T.AWAITING_APPROVAL:  # only a forced retrain does this
                why = {T.DECISION: T.SUPERSEDED, T.DECISION_REASON: f"superseded in Staging by v{i.version} "
                                                                    "while it awaited approval"}
            elif not why and replaced.tags.get(T.DECISION) == T.CHALLENGER:  # the rule: a new candidate replaces it
                why = {T.DECISION: T.SUPERSEDED, T.DECISION_REASON: f"superseded in Staging by v{i.version} while it "
                                                                    "was the challenger (a new candidate replaces it)"}
            self._retire(i.previous, i, why)
        self.set_stage(i.version, STAGING)
        self.set_alias(STAGING, i.version)
        if i.tags.get(T.DECISION) == T.CHALLENGER:
            self.set_alias(T.CHALLENGER, i.version)

    def _archive(self, i: Intent) -> None:
        self._retire(i.version, i, i.tags)

    def _retire(self, version: str, i: Intent, tags: dict[str, str]) -> None:
        """Archived: stage, no alias, `archived_at` in the move's data time."""
        self.write_tags(version, {**tags, T.ARCHIVED_AT: i.when})
        self.set_stage(version, ARCHIVED)
        for stage in (STAGING, PRODUCTION, T.CHALLENGER):
            self.drop_alias(stage, version)

    def write_tags(self, version: str, values: dict[str, str]) -> None:
        self.versions.tag(version, values)  # appended; a value it already reads is skipped

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
        """`stage`'s alias (or the `challenger` alias) onto `version`."""
        alias = self.versions.aliases.get(stage, stage)
        if str(self.client.get_registered_model(self.name).aliases.get(alias)) == str(version):
            return
        self.versions.before_write(f"alias {alias}")
        _retry(lambda: self.client.set_registered_model_alias(self.name, alias, str(version)))

    def drop_alias(self, stage: str, version: str) -> None:
        alias = self.versions.aliases.get(stage, stage)
        if str(self.client.get_registered_model(self.name).aliases.get(alias)) != str(version):
            return
        self.versions.before_write(f"drop alias {alias}")
        try:
            self.client.delete_registered_model_alias(self.name, alias)
        except MlflowException as exc:
            if not not_found(exc):
                raise
