"""Every move of a version between stages, in one module: the only caller of the registry's stage and alias
writer (`adapters.registry.moves`) outside the registry package.

Why it is built this way: docs/design.md#loop-moves.
"""

from __future__ import annotations

import logging
from datetime import datetime

import pandas as pd

from mlflow_retrain.adapters.registry import Registry, VersionInfo, utcnow
from mlflow_retrain.adapters.registry.moves import Moves, set_aside
from mlflow_retrain.adapters.registry.repair import examine
from mlflow_retrain.adapters.train import Candidate
from mlflow_retrain.base import tags as T
from mlflow_retrain.decide.approval import EXPIRE, PROMOTE, ApprovalVerdict
from mlflow_retrain.decide.challenge import PROMOTE as PROMOTE_CHALLENGER
from mlflow_retrain.decide.challenge import ChallengerVerdict, Round
from mlflow_retrain.decide.gate import PromotionDecision, gate
from mlflow_retrain.decide.invariants import (ABANDON, DROP_ALIAS, FINISH_INTENT, SET_ALIAS, SET_ASIDE_INTENT,
                                              SET_STAGE, STAGE_PENDING, TAG, UNDO_HAND_MOVE, Finding)
from mlflow_retrain.policy.config import Config

log = logging.getLogger(__name__)

UI_PERSON = "not recorded (the retrain.approval tag, set in the MLflow UI; MLflow keeps no user for a tag)"


def _moves(registry: Registry) -> Moves:
    return registry.moves


def judged(registry: Registry, candidate: VersionInfo, production: VersionInfo | None,
           decision: PromotionDecision, when: pd.Timestamp, by: str = "") -> list[str]:
    """The gate's verdict: promote (old Production archived) or archive the candidate, tagged with it.
    Returns the versions archived."""
    tags = {T.DECISION: T.PROMOTED if decision.promote else T.REJECTED, T.DECISION_REASON: decision.reason,
            T.BASELINE_VERSION: production.version if production else ""}
    return _promote_or_archive(registry, candidate, decision.promote, tags, when, by)


def await_approval(registry: Registry, candidate: VersionInfo, production: VersionInfo | None,
                   gate_decision: PromotionDecision, when: pd.Timestamp, by: str) -> None:
    """The gate passed and a person must sign off: the candidate stays in Staging, tagged as waiting
    since `when` (data time, where `approval_ttl` counts from)."""
    _moves(registry).stage_candidate(candidate.version, by=by, tags={
        T.DECISION: T.AWAITING_APPROVAL, T.DECISION_REASON: gate_decision.reason,
        T.BASELINE_VERSION: production.version if production else "", T.AWAITING_SINCE: when.isoformat()})


REFIT_NOTE = "; refitted through as of, holdout included, as v"  # ends a refitted version's decision reason


def refitted(registry: Registry, validated: VersionInfo, refit: str, production: VersionInfo | None,
             decision: PromotionDecision, when: pd.Timestamp, by: str) -> None:
    """The refit takes its validated fit's place in Staging, in one move: the validated version archived
    as `refitted` with the gate's record (reason, baseline), the refit staged pending; `validate` then
    carries out that record (`recorded`), never judging the refit on rows it was fitted on."""
    _moves(registry).stage_candidate(refit, by=by, when=when.to_pydatetime(), previous_tags={
        T.DECISION: T.REFITTED, T.DECISION_REASON: f"{decision.reason}{REFIT_NOTE}{refit}",
        T.BASELINE_VERSION: production.version if production else ""})


def recorded(registry: Registry, refit: VersionInfo) -> tuple[VersionInfo | None, str]:
    """The validated fit a refit replaced (None if it is not in the registry) and the gate's reason
    recorded on it ("" once it no longer says `refitted`: a person moved it since)."""
    validated = next((v for v in registry.versions() if v.run_id == refit.tags.get(T.REFIT_OF)), None)
    if validated is None or validated.tags.get(T.DECISION) != T.REFITTED:
        return validated, ""
    return validated, validated.tags.get(T.DECISION_REASON, "").partition(REFIT_NOTE)[0]


def challenge(registry: Registry, candidate: VersionInfo, production: VersionInfo, decision: PromotionDecision,
              when: pd.Timestamp, since: pd.Timestamp, by: str) -> None:
    """An inconclusive candidate stays in Staging as the challenger (alias `challenger`), in one move;
    its rounds count the labelled windows after `since`."""
    _moves(registry).stage_candidate(candidate.version, by=by, when=when.to_pydatetime(), tags={
        T.DECISION: T.CHALLENGER, T.DECISION_REASON: decision.reason, T.BASELINE_VERSION: production.version,
        T.CHALLENGER_SINCE: since.isoformat()})


def played(registry: Registry, challenger: VersionInfo, rounds: int, scored: Round) -> None:
    """One more round on the challenger, appended as `retrain.challenger.round.<n>` (never rewritten)."""
    _moves(registry).write_tags(challenger.version, {f"{T.CHALLENGER_ROUND}.{rounds + 1}": scored.to_json()})


def settled(registry: Registry, challenger: VersionInfo, production: VersionInfo, verdict: ChallengerVerdict,
            when: pd.Timestamp, by: str) -> list[str]:
    """The rounds' verdict on a challenger: promoted (Production archived) or archived as rejected, the
    alias dropped either way. Returns the versions archived."""
    tags = {T.DECISION: T.PROMOTED if verdict.action == PROMOTE_CHALLENGER else T.REJECTED,
            T.DECISION_REASON: verdict.reason, T.BASELINE_VERSION: production.version}
    return _promote_or_archive(registry, challenger, verdict.action == PROMOTE_CHALLENGER, tags, when, by)


def signed_off(registry: Registry, candidate: VersionInfo, verdict: ApprovalVerdict, when: pd.Timestamp,
               by: str) -> list[str]:
    """A final verdict on a waiting candidate: approved -> Production (the old one archived), rejected
    or expired -> Archived; the decision's reason keeps the gate's. Returns the versions archived."""
    tags = {T.DECISION: verdict.decision,
            T.DECISION_REASON: f"{verdict.reason}; {candidate.tags.get(T.DECISION_REASON, 'the gate passed it')}"}
    if verdict.action != EXPIRE and T.APPROVAL_BY not in registry.get(candidate.version).tags:
        # set in the MLflow UI: MLflow keeps no user or time for a tag, so the record says when the
        # cycle found it (data time and wall time) and that nobody is named
        tags.update({T.APPROVAL_BY: UI_PERSON, T.APPROVAL_AT: when.isoformat(),
                     T.APPROVAL_WALL: utcnow().isoformat(timespec="seconds")})
    return _promote_or_archive(registry, candidate, verdict.action == PROMOTE, tags, when, by)


def _promote_or_archive(registry: Registry, candidate: VersionInfo, promote: bool, tags: dict[str, str],
                        when: pd.Timestamp, by: str) -> list[str]:
    if promote:
        previous = _moves(registry).promote(candidate.version, when=when.to_pydatetime(), tags=tags, by=by)
        return [previous.version] if previous else []
    _moves(registry).archive(candidate.version, when=when.to_pydatetime(), tags=tags, by=by)
    return [candidate.version]


def moved_by_hand(registry: Registry, action: str, target: VersionInfo, production: VersionInfo | None,
                  reason: str, when: pd.Timestamp, by: str) -> VersionInfo | None:
    """`promote` or `rollback` by a person: `target` to Production, the version it replaces archived
    (after a rollback, stamped so that it is no rollback target again until it is promoted again).
    Returns the version replaced."""
    left = {T.ROLLED_BACK_WALL: utcnow().isoformat()} if action == "rollback" else {}
    return _moves(registry).promote(target.version, when=when.to_pydatetime(), by=by, tags={
        T.DECISION: T.PROMOTED, T.DECISION_REASON: f"{action}: {reason}",
        T.BASELINE_VERSION: production.version if production else "",
        f"retrain.{action}_run_id": by}, previous_tags=left)


def place(config: Config, registry: Registry, made: Candidate) -> str:
    """A new version goes to Staging for the controller to validate, except the very first one: with no
    Production to compare against, a version that passes the absolute gate goes straight to Production
    so the loop has a champion to defend; unless a person must sign off (`validation.require_approval`):
    then it waits in Staging like any candidate, for the cycle to judge it. Returns the stage it landed in."""
    if made.bootstrap and not config.validation.require_approval:
        decision = gate(metric=config.metric, candidate=made.metric, baseline=None,
                        higher_is_better=config.higher_is_better, threshold=config.gate_threshold)
        if decision.promote:
            _moves(registry).promote(made.version, when=made.as_of.to_pydatetime(),
                                     tags={T.DECISION: T.PROMOTED, T.DECISION_REASON: decision.reason})
            return "Production"
        _moves(registry).stage_candidate(made.version, tags={T.DECISION: T.PENDING,
                                                             T.DECISION_REASON: decision.reason})
        return "Staging"
    _moves(registry).stage_candidate(made.version)
    return "Staging"


def corrupt_intents(registry: Registry) -> list[str]:
    """The corrupt intents set aside on the registered model for a person, oldest first (their tags)."""
    return set_aside(registry.model_tags())


def repair(registry: Registry, now: datetime, by: str = "", passes: int = 5) -> list[Finding]:
    """Carry out the repairs `decide.invariants.diagnose` lists until the registry is healthy (each
    repair can reveal the next, e.g. a finished intent); returns what was done."""
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


def _apply(registry: Registry, finding: Finding, now: datetime, by: str) -> None:
    moves = _moves(registry)
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
