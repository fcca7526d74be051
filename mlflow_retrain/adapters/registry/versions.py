"""Reads of one registered model's versions, and the tag writes of the audit contract (`tags.py`).

Stages are deprecated in MLflow 3 but still what most teams look at; reads trust the alias first so
the tool keeps working once stages are gone (`registry.use_stages: false` runs on aliases alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlflow_retrain.base import faults
from mlflow_retrain.base import links
from mlflow_retrain.base import tags as T
from mlflow_retrain.policy.config import Config
from mlflow_retrain.policy.section import check_version
from mlflow_retrain.base.errors import RegistryError
from mlflow_retrain.adapters.registry import story
from mlflow_retrain.adapters.store import unborn
from mlflow_retrain.adapters.tracking import experiments_linked, run_page

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
    tags: dict[str, str] = field(default_factory=dict)  # its tags and its record, as one (`tags.newest`)
    record: dict[str, str] = field(default_factory=dict)  # the part its description keeps (`story.record_in`)
    written: dict[str, str] = field(default_factory=dict)  # tags and record as written, each `<key>.<n>` apart

    def history(self, key: str) -> list[str]:
        """Every value written under `key`, oldest first (`<key>`, `<key>.2`, ...)."""
        kept = self.written or self.tags
        return [kept[k] for k in sorted((k for k in kept if k == key or (k.startswith(key + ".") and
                                         k[len(key) + 1:].isdigit())), key=lambda k: int(k[len(key) + 1:] or 1))]

    @property
    def number(self) -> int:
        return int(self.version)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version, "stage": self.stage, "aliases": list(self.aliases), "run_id": self.run_id,
            "created_at": self.created_at.isoformat(), "tags": dict(self.tags),
        }


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def not_found(exc: MlflowException) -> bool:
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


class OnFirstUse:
    """An `MlflowClient` made when first used: making one opens its store, which creates a local sqlite
    store that does not exist yet, and a command that only reads must leave it uncreated."""

    def __init__(self) -> None:
        self._client: MlflowClient | None = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            self._client = MlflowClient()
        return getattr(self._client, name)


class Versions:
    """One registered model's versions: reads, registration and tags."""

    def __init__(self, config: Config, client: MlflowClient | None = None):
        import mlflow

        self.config = config
        self.name = config.model_name
        self.registry_uri = client._registry_uri if client is not None else mlflow.get_registry_uri()
        self.client = client or OnFirstUse()
        self.aliases = {PRODUCTION: config.registry.production_alias, STAGING: config.registry.staging_alias}
        # called before every write that matters: a fault point, then the lease's fencing check
        # while a cycle holds the lease (`Registry.hold`)
        self.fence: Callable[[str], None] = lambda step: None
        self._exists = False  # seen to exist: it stays so (nothing here deletes a registered model)

    def before_write(self, step: str) -> None:
        faults.point(step)
        self.fence(step)

    @property
    def unborn(self) -> Path | None:
        """The local sqlite file of a store that does not exist yet (see `store.unborn`), else None."""
        return unborn(self.registry_uri)

    def exists(self) -> bool:
        """Whether the registered model exists; a store not created yet holds none, and is left uncreated.

        Asked before most reads (about ten times a cycle): once seen, the answer is remembered, since
        a registered model is never deleted by this tool, and a person deleting it mid-cycle makes
        the next read fail anyway."""
        if self._exists:
            return True
        if self.unborn is not None:
            return False
        try:
            self.client.get_registered_model(self.name)
            self._exists = True
            return True
        except MlflowException as exc:
            if not_found(exc):
                return False
            raise

    def require(self) -> None:
        if self.unborn is not None:
            raise RegistryError(f"no store yet: {self.unborn} does not exist, so nothing is registered; "
                                "`mlflow-retrain cycle` creates it with the first model")
        if not self.exists():
            from mlflow_retrain.base.redact import redact

            raise RegistryError(
                f"registered model {self.name!r} does not exist in {redact(self.registry_uri)}; check "
                "model_name and the store (MLFLOW_TRACKING_URI, or tracking_uri in the policy), or run "
                "`mlflow-retrain train` first")

    def _info(self, mv: Any, aliases: tuple[str, ...] | None = None) -> VersionInfo:
        aliases = tuple(mv.aliases) if aliases is None else aliases
        record = story.record_in(mv.description)
        written = {**record, **mv.tags}
        tags = T.newest(written)
        stage = mv.current_stage or NONE
        if not self.config.registry.use_stages:
            stage = next((s for s, a in self.aliases.items() if a in aliases), NONE)
            if stage == NONE and T.ARCHIVED_AT in tags:
                stage = ARCHIVED
        return VersionInfo(
            version=str(mv.version), stage=stage, aliases=aliases, run_id=mv.run_id or "", source=mv.source or "",
            created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, timezone.utc), tags=tags, record=record,
            written=written,
        )

    def get(self, version: str | int) -> VersionInfo:
        version = check_version(version, f"model {self.name!r} version")  # before the store's query overflows
        try:
            return self._info(self.client.get_model_version(self.name, version))
        except MlflowException as exc:
            if not_found(exc):
                raise RegistryError(f"model {self.name!r} has no version {version}; see `mlflow-retrain status`") from None
            raise

    def in_stage(self, stage: str) -> VersionInfo | None:
        """The version holding a stage: by alias first (survives the end of stages), then by stage."""
        try:
            return self._info(self.client.get_model_version_by_alias(self.name, self.aliases[stage]))
        except MlflowException as exc:
            if not not_found(exc):
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

    def untag_model(self, key: str) -> None:
        self.before_write(f"model untag {key}")
        try:
            self.client.delete_registered_model_tag(self.name, key)
        except MlflowException as exc:
            if not not_found(exc):
                raise

    def model_tags(self) -> dict[str, str]:
        return dict(self.client.get_registered_model(self.name).tags) if self.exists() else {}

    def register(self, model_uri: str, model_id: str, run_id: str, tags: dict[str, str]) -> VersionInfo:
        self.before_write("register")
        if not self.exists():
            try:
                self.client.create_registered_model(
                    self.name, description=("Managed by mlflow-retrain: each version says why it was made and what was "
                                            "decided (its retrain.* tags and the record at the end of its description)."))
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
        shown = {k: str(v) for k, v in tags.items() if k in T.SHOWN}
        record = {k: str(v) for k, v in tags.items() if k not in T.SHOWN}
        mv = self.client.create_model_version(self.name, model_uri, run_id=run_id, tags=shown, model_id=model_id,
                                              description=story.record_block(record) or None)
        return self._info(mv, ())

    def tag(self, version: str, values: dict[str, str]) -> None:
        """Each value appended to the version's record, in order (`tags.appended`: one it already reads
        is skipped, none is rewritten): the keys a person reads in the versions list (`tags.SHOWN`) as
        tags, the rest in its description's record block, one write for a run of them (as tags once
        that block is full)."""
        mv = self.client.get_model_version(self.name, str(version))
        info = self._info(mv)
        have, record, written = dict(info.tags), dict(info.record), dict(info.record)
        description = mv.description

        def flush() -> None:  # the record's new values, before a tag written after them
            nonlocal description, written
            if record != written:
                self.before_write(f"tag {','.join(k for k in record if k not in written)}")
                description = story.with_record(description, record)
                self.client.update_model_version(self.name, str(version), description=description)
                written = dict(record)

        for key, value in values.items():
            where = T.appended(have, key, str(value))
            if where is None:
                continue
            have = T.newest({**have, where: str(value)})
            if key in T.SHOWN or len(story.record_block({**record, where: str(value)})) > story.RECORD_LIMIT:
                flush()
                self.before_write(f"tag {where}")
                self.client.set_model_version_tag(self.name, str(version), where, str(value))
            else:
                record[where] = str(value)
        flush()

    @staticmethod
    def _markdown(info: VersionInfo, description: str | None, known: dict[str, str], client: MlflowClient) -> str:
        """`version_markdown` with full run links, their experiments read back from the description
        (`known` collects them across versions) or asked once."""
        known.update(experiments_linked(description))
        return version_markdown(info, lambda run: run_page(run, known, client))

    def tag_model(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self.before_write(f"model tag {key}")
            self.client.set_registered_model_tag(self.name, key, str(value))

    def describe(self) -> None:
        """Every version the tool made gets its tags as a Markdown description (`version_markdown`),
        the text the UI shows on its page; written only where it changed. Called after each move: the
        description is derived from the tags, so one left stale by a crash is rewritten by the next call
        (hence no fault point: a kill here loses nothing the tags do not hold)."""
        model = self.client.get_registered_model(self.name)
        by_version: dict[str, list[str]] = {}
        for alias, number in model.aliases.items():
            by_version.setdefault(str(number), []).append(alias)
        infos, known = [], {}
        for mv in self.client.search_model_versions(f"name = '{self.name}'"):
            infos.append(self._info(mv, tuple(by_version.get(str(mv.version), []))))
            if T.DECISION not in infos[-1].tags:
                continue  # not made by the tool: its description is its owner's
            text = self._markdown(infos[-1], mv.description, known, self.client)
            if (mv.description or "") != text:
                self.fence("describe")
                self.client.update_model_version(self.name, str(mv.version), description=text)
        # the model's page: Production's recent history, in a block of its own (a person's text stays)
        text = story.model_description(model.description or "", story.history_markdown(self.name, infos))
        if (model.description or "") != text:
            self.fence("describe")
            self.client.update_registered_model(self.name, description=text)


_HEADLINES = {T.PENDING: "Pending: waiting to be validated against Production",
              T.PROMOTED: "Promoted to Production", T.REJECTED: "Rejected by the gate",
              T.ABANDONED: "Abandoned: replaced in Staging before it was judged",
              T.AWAITING_APPROVAL: "Awaiting approval: passed the gate, waits in Staging for a person",
              T.EXPIRED: "Expired: nobody approved it within the approval TTL",
              T.SUPERSEDED: "Superseded: replaced in Staging by a newer candidate while it awaited approval",
              T.REFITTED: "Refitted: passed the gate; its refit through as of (holdout included) took its place"}


def version_markdown(version: VersionInfo, run_link: Callable[[str], str] = links.run) -> str:
    """A version's audit tags as Markdown for its page in the MLflow UI: why it was trained, what was
    decided and why, against which baseline, on which windows, with links to its runs (`run_link`)."""
    tags = version.tags

    def get(key: str) -> str:
        return tags.get(key, "")

    decision = get(T.DECISION)
    head = _HEADLINES.get(decision, decision or "not judged")
    if decision == T.PROMOTED and get(T.PROMOTED_AT):
        head += f" as of {get(T.PROMOTED_AT)}"
    if get(T.ARCHIVED_AT) and decision in (T.PROMOTED, T.REJECTED, T.ABANDONED, T.EXPIRED, T.SUPERSEDED, T.REFITTED):
        head += f"; archived as of {get(T.ARCHIVED_AT)}"
    lines = [f"v{version.version}: {head}", ""]  # plain: the versions list shows it raw
    if get(T.TRIGGER):
        lines.append(f"- **Trigger:** `{get(T.TRIGGER)}`: {get(T.REASON) or 'no reason recorded'}")
    if decision:
        lines.append(f"- **Decision:** {decision}" + (":" if get(T.DECISION_REASON) else ""))
        lines += [f"  - {part}" for part in get(T.DECISION_REASON).split("; ") if part]
    if get(T.APPROVAL):
        by = f" by {get(T.APPROVAL_BY)}" if get(T.APPROVAL_BY) else " (tag set by hand)"
        at = f" as of `{get(T.APPROVAL_AT)}`" if get(T.APPROVAL_AT) else ""
        lines.append(f"- **Sign-off:** {get(T.APPROVAL)}{by}{at}" + (f": {get(T.APPROVAL_REASON)}"
                                                                       if get(T.APPROVAL_REASON) else ""))
    if get(T.BASELINE_VERSION):
        lines.append(f"- **Baseline:** v{get(T.BASELINE_VERSION)} (Production when it was judged)")
    windows = [f"trained on `{get(T.TRAIN_WINDOW)}`" if get(T.TRAIN_WINDOW) else "",
               f"holdout `{get(T.HOLDOUT_WINDOW)}`" if get(T.HOLDOUT_WINDOW) else "",
               f"as of `{get(T.AS_OF)}`" if get(T.AS_OF) else ""]
    if any(windows):
        lines.append("- **Windows:** " + ", ".join(w for w in windows if w))
    if get(T.REFIT_OF):
        lines.append(f"- **Refit** on `{get(T.REFIT_ROWS)}` of the validated fit [`{get(T.REFIT_OF)}`]"
                     f"({run_link(get(T.REFIT_OF))}), whose gate is the evidence below")
    runs = [f"training run [`{version.run_id}`]({run_link(version.run_id)})" if version.run_id else "",
            f"cycle [`{get(T.CYCLE_RUN_ID)}`]({run_link(get(T.CYCLE_RUN_ID))})" if get(T.CYCLE_RUN_ID) else ""]
    if any(runs):
        lines.append("- **Runs:** " + ", ".join(r for r in runs if r))
    if get(T.ROLLED_BACK_WALL):
        lines.append(f"- **Rolled back:** taken out of Production by a rollback at {get(T.ROLLED_BACK_WALL)} (clock time)")
    lines += story.gate_markdown(tags, version.version)
    lines += ["", "_Written by mlflow-retrain from the version's `retrain.*` tags and record; rewritten when they change._"]
    kept = story.record_block(version.record)
    return story.padded("\n".join(lines))[:story.DESCRIPTION_LIMIT - len(kept) - 1] + "\n" + kept
