"""A person signs off: what to do with a candidate that passed the gate and waits in Staging.

Why it is built this way: docs/design.md#decide-approval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from mlflow_retrain.base import tags as T
from mlflow_retrain.decide.verdicts import RetrainDecision
from mlflow_retrain.decide.words import DAY, moment, span_in

WAIT, PROMOTE, REJECT, EXPIRE, REVALIDATE = "wait", "promote", "reject", "expire", "revalidate"
HELD = "awaiting_approval"  # `RetrainDecision.blocked_by` while a candidate waits


@dataclass(frozen=True)
class ApprovalVerdict:
    """What becomes of a waiting candidate, and why (one sentence per rule that spoke)."""

    action: str  # wait | promote | reject | expire | revalidate
    reasons: list[str] = field(default_factory=list)
    ignored: str = ""  # a `retrain.approval` value that is neither approved nor rejected, as found

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    @property
    def final(self) -> bool:
        """Whether the verdict ends the wait with a move (promote, reject, expire)."""
        return self.action in (PROMOTE, REJECT, EXPIRE)

    @property
    def decision(self) -> str:
        """The `retrain.decision` the candidate ends with (final verdicts only)."""
        return {PROMOTE: T.PROMOTED, REJECT: T.REJECTED, EXPIRE: T.EXPIRED}[self.action]

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reason": self.reason, "reasons": list(self.reasons), "ignored": self.ignored}


def review(*, approval: str | None, by: str | None, why: str | None, waiting_since: datetime | None,
           as_of: datetime, ttl: timedelta | None, required: bool, unit: str = DAY) -> ApprovalVerdict:
    """The verdict on one waiting candidate (rules in the module docstring). `approval`, `by` and `why`
    are its tags as found (None when absent); `waiting_since` and `as_of` are data times, said in the
    policy's `unit` (`decide.words`)."""
    said = (approval or "").strip().lower()
    who = f"by {by}" if by else "through the retrain.approval tag (no name recorded: set in the MLflow UI?)"
    because = f": {why}" if why else ": no reason given"
    if said == T.APPROVED:
        return ApprovalVerdict(PROMOTE, [f"approved {who}{because}"])
    if said == T.REJECTED:
        return ApprovalVerdict(REJECT, [f"rejected {who}{because}"])
    ignored = (approval or "") if said else ""
    notes = [f"retrain.approval={approval!r} is neither approved nor rejected: ignored (set approved or rejected)"
             ] if said else []
    if not required:
        again = "validation.require_approval is off now: judged again by the gate on the current data"
        return ApprovalVerdict(REVALIDATE, [*notes, again], ignored)
    if waiting_since is None:
        return ApprovalVerdict(WAIT, [*notes, "awaiting approval (since when is not recorded, so it cannot expire)"],
                              ignored)
    age = as_of - waiting_since
    if ttl is not None and age >= ttl:
        late = (f"nobody approved or rejected it within approval_ttl {span_in(ttl, unit)}: awaiting since "
                f"{moment(waiting_since, unit)}, {span_in(age, unit)} before {moment(as_of, unit)}")
        return ApprovalVerdict(EXPIRE, [*notes, late], ignored)
    until = (f"; expires as of {moment(waiting_since + ttl, unit)} (approval_ttl {span_in(ttl, unit)})"
             if ttl is not None else "; no approval_ttl: it waits until a person decides")
    return ApprovalVerdict(WAIT, [*notes, f"awaiting approval since {moment(waiting_since, unit)}{until}"], ignored)


def sign_off_help(model_name: str, version: str, since: datetime | None, ttl: timedelta | None,
                  policy: str = "retrain.yaml") -> dict[str, str | None]:
    """What a person needs to act on a waiting candidate: the two commands, the UI tag, since when it
    waits and when it expires (data time), for the `awaiting_approval` message and `status`."""
    expires = (since + ttl).isoformat() if since is not None and ttl is not None else None
    return {"version": version, "since": since.isoformat() if since is not None else None, "expires": expires,
            "approve": f'mlflow-retrain approve {version} --config {policy} --reason "..."',
            "reject": f'mlflow-retrain reject {version} --config {policy} --reason "..."',
            "tag": f"or in the MLflow UI: set the tag {T.APPROVAL}=approved (or rejected) on {model_name} version "
                   f"{version}; the next cycle carries it out"}


def hold(decision: RetrainDecision, waiting: str, *, forced: bool) -> RetrainDecision:
    """A retrain the triggers asked for, held while version `waiting` awaits approval (see the module
    docstring); a forced one goes ahead and supersedes it."""
    if not decision.retrain or forced:
        return decision
    return RetrainDecision(False, decision.fired, decision.results,
                           f"{decision.reason}; but v{waiting} awaits a person's approval in Staging: no new "
                           "candidate until it is approved, rejected or expires (--force supersedes it)", HELD)
