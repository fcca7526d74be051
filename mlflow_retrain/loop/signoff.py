"""A person signs off (`validation.require_approval:

Why it is built this way: docs/design.md#loop-signoff.
"""

from __future__ import annotations

import getpass
import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mlflow_retrain.adapters.registry import Registry, VersionInfo
from mlflow_retrain.base import links
from mlflow_retrain.base import tags as T
from mlflow_retrain.base.errors import ApprovalError, RetrainError
from mlflow_retrain.decide.approval import PROMOTE, ApprovalVerdict, review
from mlflow_retrain.decide.words import moment, span_in, unit_for
from mlflow_retrain.loop.manual import audited, opened, told
from mlflow_retrain.loop.reconcile import reconciled
from mlflow_retrain.loop.moves import signed_off
from mlflow_retrain.policy.config import Config

log = logging.getLogger(__name__)

VERDICTS = {"approve": T.APPROVED, "reject": T.REJECTED}  # command -> the value of `retrain.approval`
IGNORED = "retrain.approval_ignored"  # + "", ".2", ...: each unusable value found, noted once


def note_ignored(registry: Registry, version: VersionInfo, verdict: ApprovalVerdict, as_of: pd.Timestamp,
                 unit: str) -> bool:
    """Say on the version, once per value, that its `retrain.approval` value was ignored; earlier
    notes are kept (a new value gets the next key). True when a note was written."""
    if not verdict.ignored:
        return False
    said = f"retrain.approval={verdict.ignored!r} ignored as of {moment(as_of, unit)}: set approved or rejected"
    if any(v.startswith(f"retrain.approval={verdict.ignored!r} ") for v in version.history(IGNORED)):
        return False
    registry.tag(version.version, {IGNORED: said})  # appended as the next `<key>.<n>`
    return True


def awaits(version: VersionInfo | None) -> bool:
    return version is not None and version.tags.get(T.DECISION) == T.AWAITING_APPROVAL


def review_candidate(config: Config, version: VersionInfo, as_of: pd.Timestamp) -> ApprovalVerdict:
    """`decide.approval.review` over a waiting version's tags and the policy, at data time `as_of`."""
    tags = version.tags
    since = tags.get(T.AWAITING_SINCE)
    return review(approval=tags.get(T.APPROVAL), by=tags.get(T.APPROVAL_BY), why=tags.get(T.APPROVAL_REASON),
                  waiting_since=pd.Timestamp(since).to_pydatetime() if since else None,
                  as_of=as_of.to_pydatetime(), ttl=config.validation.approval_ttl,
                  required=config.validation.require_approval, unit=unit_for(config.monitoring.window))


@dataclass(frozen=True)
class SignOff:
    """What `approve`/`reject` did: the person's verdict and the move it became."""

    action: str  # approve | reject
    version: str
    outcome: str  # promoted | rejected
    previous: str | None  # the Production version an approval replaced
    reason: str
    by: str
    run_id: str
    as_of: str
    wall: str
    note: str = ""  # what the data time says of the record: a sign-off past approval_ttl

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def history_end(registry: Registry) -> tuple[pd.Timestamp, str] | None:
    """The newest data time the registry's history records (a promotion, archiving, wait or sign-off)
    and which record it is: a move by hand stamped before it would write history out of order."""
    stamps = [(pd.Timestamp(v.tags[key]), f"v{v.version} {key.removeprefix('retrain.')}")
              for v in registry.versions() for key in (T.PROMOTED_AT, T.ARCHIVED_AT, T.AWAITING_SINCE, T.APPROVAL_AT)
              if v.tags.get(key)]
    return max(stamps, key=lambda s: s[0]) if stamps else None


def in_order(config: Config, registry: Registry, candidate: VersionInfo, action: str, when: pd.Timestamp) -> str:
    """Refuse a sign-off whose data time precedes the registry's history (a replay's history stays in
    order); return a note when it comes after approval_ttl ran out (the record says so, it is kept)."""
    end, unit = history_end(registry), unit_for(config.monitoring.window)
    if end is not None and when < end[0]:
        raise ApprovalError(f"{action} as of {moment(when, unit)} comes before the registry's history, which reaches "
                            f"{moment(end[0], unit)} ({end[1]}): pass --as-of {moment(end[0], unit)} or later")
    since, ttl = candidate.tags.get(T.AWAITING_SINCE), config.validation.approval_ttl
    if since and ttl is not None and when >= pd.Timestamp(since) + ttl:
        late = when - pd.Timestamp(since) - ttl
        return (f"{action} as of {moment(when, unit)} is {span_in(late, unit)} after v{candidate.version}'s "
                f"approval_ttl ran out ({moment(pd.Timestamp(since) + ttl, unit)}); a cycle by then would have "
                "expired it. In a replay, pass --as-of with the data time of the decision")
    return ""


def waiting(config: Config, registry: Registry, version: str) -> VersionInfo:
    """The version, if it is the Staging candidate awaiting approval; else one line saying what it is."""
    target = registry.get(version)
    staged = registry.staging()
    if not awaits(target) or staged is None or staged.version != target.version:
        what = target.tags.get(T.DECISION) or "no retrain.decision"
        raise ApprovalError(f"v{target.version} does not await approval (it is {target.stage}, {what}); "
                            f"{'v' + staged.version if awaits(staged) else 'no version'} of {config.model_name!r} "
                            "does; see `mlflow-retrain status`")
    return target


def sign_off(config: Config, action: str, version: str, reason: str, by: str | None = None,
             as_of: str | None = None) -> SignOff:
    """`approve`/`reject`: checked before the lease (the reason, the policy, the version), then under
    it the person's record on the version (the verdict written last, so a half-written record is no
    verdict) and the move it decides, audited in a run of kind `approve`/`reject` (`loop.manual`)."""
    if not reason.strip():
        raise RetrainError(f"{action} needs --reason \"...\": a person's sign-off records why")
    if not config.validation.require_approval:
        raise ApprovalError(f"validation.require_approval is off for {config.model_name!r}: candidates are promoted "
                            "by the gate and none waits for a person; `mlflow-retrain promote VERSION --reason` "
                            "moves one by hand")
    person = by or _person()
    when, registry = opened(config, as_of)
    note = in_order(config, registry, waiting(config, registry, version), action, when)
    if note:
        log.warning("%s", note)
    with reconciled(config, registry, when.to_pydatetime()):
        candidate = waiting(config, registry, version)  # a cycle may have moved it while we waited for the lease
        production = registry.production()
        title = f"v{candidate.version} {VERDICTS[action]} by {person}" + (
            f", replacing v{production.version}" if action == "approve" and production else "")
        with audited(config, registry, action, title[:250], when) as record:
            registry.tag(candidate.version, {T.APPROVAL_BY: person, T.APPROVAL_REASON: reason,
                                             T.APPROVAL_AT: when.isoformat(), T.APPROVAL_WALL: record.wall,
                                             T.APPROVAL: VERDICTS[action]})
            verdict = review_candidate(config, registry.get(candidate.version), when)
            archived = signed_off(registry, candidate, verdict, when, by=record.run_id)
            done = SignOff(action, candidate.version, verdict.decision,
                           production.version if verdict.action == PROMOTE and production else None, reason,
                           person, record.run_id, when.isoformat(), record.wall, note)
            record.tags = {"outcome": done.outcome, "production_version": production.version if production else "",
                           "candidate_version": candidate.version, "reason": verdict.reason[:7900],
                           "archived_versions": ",".join(archived),
                           "mlflow.note.content": _description(config, title, when, verdict, candidate, note)}
            record.decision = done.to_dict()
    log.info("%s", title)
    if done.outcome in (T.PROMOTED, T.REJECTED):
        told(config, action, done.version, done.previous, reason, done.run_id, person)
    return done


def _person() -> str:
    """Who signs off when `--by` is not given: the login name (the audit must name someone)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _description(config: Config, title: str, when: pd.Timestamp, verdict: ApprovalVerdict,
                 candidate: VersionInfo, note: str) -> str:
    page = f"[v{candidate.version}]({links.model(config.model_name, candidate.version)})"
    return (f"{title}\n\nSigned off as of `{moment(when, unit_for(config.monitoring.window))}` on `{config.model_name}`: {verdict.reason}.\n\n"
            + (f"**Note:** {note}\n\n" if note else "")
            + f"The gate had passed {page}: {candidate.tags.get(T.DECISION_REASON, '')}")[:8000]
