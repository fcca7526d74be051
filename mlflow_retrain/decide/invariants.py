"""The registry's invariants, and the repairs that restore them, as a pure function over plain data.

Why it is built this way: docs/design.md#decide-invariants.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mlflow_retrain.base import tags as T

PRODUCTION, STAGING, ARCHIVED, NONE = "Production", "Staging", "Archived", "None"

# repair kinds
FINISH_INTENT, SET_STAGE, SET_ALIAS, DROP_ALIAS, TAG, STAGE_PENDING, ABANDON, SET_ASIDE_INTENT, UNDO_HAND_MOVE = (
    "finish_intent", "set_stage", "set_alias", "drop_alias", "tag", "stage_pending", "abandon", "set_aside_intent",
    "undo_hand_move")


@dataclass(frozen=True)
class VersionState:
    version: str
    stage: str  # the registry's stage (None when stages are not used)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def number(self) -> int:
        return int(self.version)


@dataclass(frozen=True)
class Finding:
    """One broken invariant and the repair that restores it."""

    problem: str
    repair: str
    version: str | None = None
    values: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Diagnosis:
    findings: list[Finding]

    @property
    def healthy(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "findings": [f.to_dict() for f in self.findings]}


def diagnose(versions: list[VersionState], aliases: dict[str, str], intent: str | None, *, use_stages: bool,
             production_alias: str, staging_alias: str, now: str, corrupt_intent: str | None = None) -> Diagnosis:
    """What is wrong with one registered model, and how to repair each thing (see the module docstring).

    `aliases` maps alias -> version, `intent` is the description of a move left behind (`corrupt_intent`
    why the tag is not one), `now` the data time to stamp on tags a repair has to invent.
    """
    if intent:
        return Diagnosis([Finding(f"a move was cut short: {intent}", FINISH_INTENT)])
    # a corrupt intent explains nothing: set aside, and the registry diagnosed as it is
    findings: list[Finding] = [] if not corrupt_intent else [Finding(
        f"retrain.intent is corrupt ({corrupt_intent}): set aside as found for a person to look at, the move it "
        "meant is not made", SET_ASIDE_INTENT)]
    hand_moved = _hand_moved(versions, aliases.get(production_alias), production_alias, use_stages)
    if hand_moved:  # undone first: what else looks wrong follows from it
        return Diagnosis(findings + hand_moved)
    by_version = {v.version: v for v in versions}
    production = _holder(versions, by_version, aliases.get(production_alias), PRODUCTION, use_stages)
    findings += _agree(versions, production, aliases.get(production_alias), PRODUCTION, production_alias, use_stages)
    staging = _holder(versions, by_version, aliases.get(staging_alias), STAGING, use_stages)
    if staging is not None and production is not None and staging.version == production.version:
        staging = None
    findings += _agree(versions, staging, aliases.get(staging_alias), STAGING, staging_alias, use_stages)
    findings += _pending(versions, staging, production, use_stages, aliases)
    findings += _awaiting(versions, staging, production)
    findings += _tags(versions, production, aliases, production_alias, staging_alias, now)
    findings += _challenger(versions, staging, aliases.get(T.CHALLENGER))
    return Diagnosis(findings)


def _challenger(versions: list[VersionState], staging: VersionState | None, alias: str | None) -> list[Finding]:
    """The `challenger` alias is on the Staging version that says `challenger`, and only there: left on
    any other (archived, promoted) it is dropped; a challenger in Staging without it gets it back. A
    repair never promotes a challenger: only its rounds' verdict (`decide.challenge.verdict`) does."""
    by_version = {v.version: v for v in versions}
    holder = staging if staging is not None and staging.tags.get(T.DECISION) == T.CHALLENGER else None
    if alias is not None and (holder is None or str(alias) != holder.version) and str(alias) in by_version:
        return [Finding(f"the 'challenger' alias is on v{alias}, which is not the challenger in Staging", DROP_ALIAS,
                        str(alias), {"stage": T.CHALLENGER})]
    if holder is not None and alias is None:
        return [Finding(f"v{holder.version} is the challenger in Staging without the 'challenger' alias", SET_ALIAS,
                        holder.version, {"stage": T.CHALLENGER})]
    return []


def approved(version: VersionState) -> bool:
    """Whether a gate or a recorded person put (or lets) this version into Production: the tool promoted
    it (the gate, `promote`, `rollback`, `approve`), or it passed the gate and a person's verdict
    `retrain.approval=approved` waits to be carried out. Nothing else does: rejected, expired, pending,
    abandoned, awaiting without a verdict, or no `retrain.decision` at all (registered outside the tool)."""
    decision = version.tags.get(T.DECISION)
    return decision == T.PROMOTED or (decision == T.AWAITING_APPROVAL
                                      and version.tags.get(T.APPROVAL, "").strip().lower() == T.APPROVED)


def _hand_moved(versions: list[VersionState], alias: str | None, alias_name: str, use_stages: bool) -> list[Finding]:
    """Versions found in Production (by alias, or by stage) that nobody approved: each is taken out and
    the last audited Production (the one promoted last, by the clock of its promotion) restored. A
    Production with no `retrain.decision` at all in a registry with no audited Production is the model a
    team served before this tool: it is kept (and its promotion recorded by `_tags`), never taken out
    with nothing to serve in its place."""
    audited = [v for v in versions if v.tags.get(T.DECISION) == T.PROMOTED]
    last = max(audited, key=lambda v: (v.tags.get(T.PROMOTED_WALL, ""), v.tags.get(T.PROMOTED_AT, ""), v.number),
               default=None)
    found = {v.version: [w for w, there in ((f"alias {alias_name}", v.version == str(alias)),
                                            (f"stage {PRODUCTION}", use_stages and v.stage == PRODUCTION)) if there]
             for v in versions if not approved(v) and (last is not None or T.DECISION in v.tags)}
    moved = [v for v in versions if found.get(v.version)]
    restored = (f"v{last.version}, the last audited Production, restored" if last is not None
                else "taken out of Production (no audited Production to restore)")
    return [Finding(f"v{v.version} ({v.tags.get(T.DECISION) or 'no retrain.decision'}) was put into Production by "
                    f"hand ({' and '.join(found[v.version])}) but neither a gate nor a person approved it: "
                    f"{restored}; the hand move recorded on v{v.version}", UNDO_HAND_MOVE, v.version,
                    {"found": " and ".join(found[v.version]), "restore": last.version if last is not None else ""})
            for v in moved]


def _holder(versions: list[VersionState], by_version: dict[str, VersionState], alias: str | None, stage: str,
            use_stages: bool) -> VersionState | None:
    """Who holds a stage: the alias's version (unless its stage is terminal), else the newest holder."""
    aliased = by_version.get(str(alias)) if alias is not None else None
    if aliased is not None and not (use_stages and stage == STAGING and aliased.stage in (ARCHIVED, PRODUCTION)):
        return aliased
    holders = [v for v in versions if use_stages and v.stage == stage]
    return max(holders, key=lambda v: v.number) if holders else None


def _agree(versions: list[VersionState], holder: VersionState | None, alias: str | None, stage: str,
           alias_name: str, use_stages: bool) -> list[Finding]:
    found = []
    if use_stages:
        for other in versions:
            if other.stage == stage and (holder is None or other.version != holder.version):
                found.append(Finding(f"v{other.version} is in {stage} but the {alias_name!r} alias is on "
                                     f"v{holder.version if holder else '-'}", SET_STAGE, other.version,
                                     {"stage": ARCHIVED}))
        if holder is not None and holder.stage != stage:
            found.append(Finding(f"the {alias_name!r} alias is on v{holder.version}, whose stage is {holder.stage}",
                                 SET_STAGE, holder.version, {"stage": stage}))
    if holder is not None and str(alias) != holder.version:
        found.append(Finding(f"v{holder.version} is in {stage} but the {alias_name!r} alias is on "
                             f"{'v' + str(alias) if alias else 'no version'}", SET_ALIAS, holder.version,
                             {"stage": stage}))
    if holder is None and alias is not None:
        found.append(Finding(f"the {alias_name!r} alias is on v{alias}, which cannot hold {stage}", DROP_ALIAS,
                             str(alias), {"stage": stage}))
    return found


def _pending(versions: list[VersionState], staging: VersionState | None, production: VersionState | None,
             use_stages: bool, aliases: dict[str, str]) -> list[Finding]:
    """Pending versions outside Staging: the newest (when Staging is free) is staged to be judged."""
    aliased = set(aliases.values())
    held = {v.version for v in (staging, production) if v is not None}
    stray = sorted((v for v in versions if v.tags.get(T.DECISION) == T.PENDING and v.version not in held
                    and v.stage != ARCHIVED and (v.stage == NONE if use_stages else v.version not in aliased)),
                   key=lambda v: v.number, reverse=True)
    found = []
    if stray and staging is None:
        newest = stray.pop(0)
        found.append(Finding(f"v{newest.version} is pending but not in Staging (its cycle ended before "
                             "staging it): staged, to be judged by the next cycle", STAGE_PENDING, newest.version))
    waiting = f"v{staging.version} waits in Staging to be judged" if staging is not None else "a newer candidate exists"
    for version in stray:
        found.append(Finding(f"v{version.version} is pending outside Staging while {waiting}: archived as abandoned",
                             ABANDON, version.version))
    for version in versions:
        if version.tags.get(T.DECISION) == T.PENDING and version.stage == ARCHIVED:
            found.append(Finding(f"v{version.version} is archived but still says pending", TAG, version.version,
                                 {T.DECISION: T.ABANDONED,
                                  T.DECISION_REASON: "archived before it was judged (repaired)"}))
    return found


def _awaiting(versions: list[VersionState], staging: VersionState | None,
              production: VersionState | None) -> list[Finding]:
    """A version awaiting approval (or a challenger) outside Staging was moved by hand (in the UI): it no longer waits.
    In Production (with a person's approval, see `approved`) the tag check below records the promotion;
    elsewhere it is archived as abandoned."""
    held = {v.version for v in (staging, production) if v is not None}
    found = []
    for version in versions:
        decision = version.tags.get(T.DECISION)
        if decision not in (T.AWAITING_APPROVAL, T.CHALLENGER) or version.version in held:
            continue
        waited, waits = (("awaited approval", "awaits approval") if decision == T.AWAITING_APPROVAL
                         else ("was the challenger", "is the challenger"))
        why = {T.DECISION: T.ABANDONED, T.DECISION_REASON: f"moved out of Staging outside the tool while it {waited} "
                                                           "(repaired)"}
        if version.stage == ARCHIVED:
            found.append(Finding(f"v{version.version} is archived but still says {decision}", TAG,
                                 version.version, why))
        else:
            found.append(Finding(f"v{version.version} {waits} outside Staging: archived as abandoned",
                                 ABANDON, version.version, why))
    return found


def _tags(versions: list[VersionState], production: VersionState | None, aliases: dict[str, str],
          production_alias: str, staging_alias: str, now: str) -> list[Finding]:
    found = []
    if production is not None:
        missing = {}
        if T.DECISION not in production.tags:  # served before this tool, no audited Production (`_hand_moved`)
            missing[T.DECISION] = T.PROMOTED
            missing[T.DECISION_REASON] = ("found in Production with no retrain.decision and no audited Production "
                                          "to restore (a model served before this tool): kept, and recorded here")
        elif production.tags.get(T.DECISION) != T.PROMOTED:  # awaiting, approved by a person (`approved`)
            by = production.tags.get(T.APPROVAL_BY) or "a person (the retrain.approval tag)"
            missing[T.DECISION] = T.PROMOTED
            missing[T.DECISION_REASON] = (f"approved by {by}, moved into Production outside the tool; "
                                          f"{production.tags.get(T.DECISION_REASON, 'the gate passed it')}")
        if T.PROMOTED_AT not in production.tags:
            missing[T.PROMOTED_AT] = production.tags.get(T.AS_OF, now)
        if missing:
            found.append(Finding(f"v{production.version} is in Production without {', '.join(sorted(missing))}",
                                 TAG, production.version, missing))
    held = {aliases.get(production_alias), aliases.get(staging_alias)}
    retired_at = production.tags.get(T.PROMOTED_AT, now) if production is not None else now
    for version in versions:
        if (version.version not in held and (production is None or version.version != production.version)
                and version.stage in (ARCHIVED, NONE) and T.PROMOTED_AT in version.tags
                and T.ARCHIVED_AT not in version.tags):
            found.append(Finding(f"v{version.version} left Production without archived_at", TAG, version.version,
                                 {T.ARCHIVED_AT: retired_at}))
    return found
