"""What one cycle does, from what it found in the registry: pure, like the gate.

Why it is built this way: docs/design.md#decide-plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow_retrain.base import tags as T
from mlflow_retrain.decide.approval import REVALIDATE, ApprovalVerdict, hold
from mlflow_retrain.decide.verdicts import RetrainDecision

SIGN_OFF, VALIDATE, BOOTSTRAP, ASSESS = "sign_off", "validate", "bootstrap", "assess"  # first steps
RETRAIN, NOTHING = "retrain", "nothing"  # what `assess` (or a held bootstrap) comes to


@dataclass(frozen=True)
class Staged:
    """The version in Staging, as its tags describe it."""

    version: str
    decision: str | None = None  # its `retrain.decision`
    cycle_run_id: str | None = None  # the cycle that made it, if one did

    @property
    def awaits(self) -> bool:
        """Whether it awaits a person's sign-off (`validation.require_approval`)."""
        return self.decision == T.AWAITING_APPROVAL


@dataclass(frozen=True)
class Plan:
    """The cycle's step, why, and what a dry run reports for it."""

    step: str  # sign_off | validate | bootstrap | retrain | nothing
    decision: RetrainDecision
    outcome: str  # would_<verdict> | would_validate | would_retrain | blocked | no_retrain
    candidate: str | None = None  # the version a sign-off or a validation acts on


def first_step(production: str | None, staged: Staged | None, approval: ApprovalVerdict | None) -> str:
    """Which step applies, before the triggers are evaluated: with a sign-off they are evaluated for
    the record only (not forced), with `assess` to decide, otherwise not at all."""
    if staged is not None and staged.awaits and approval is not None and approval.final:
        return SIGN_OFF
    revalidate = approval is not None and approval.action == REVALIDATE
    if staged is not None and (staged.decision == T.PENDING or revalidate):
        return VALIDATE
    return BOOTSTRAP if production is None else ASSESS


def plan(*, production: str | None, staged: Staged | None, approval: ApprovalVerdict | None,
         triggers: RetrainDecision | None, force: bool = False, unborn: str | None = None) -> Plan:
    """The cycle's plan. `production` is Production's version (None: no model yet), `approval` the
    verdict on a Staging version that awaits a person, `triggers` the triggers' decision when
    `first_step` asked for one (None with no Production), `unborn` the store a first cycle creates."""
    step = first_step(production, staged, approval)
    waiting = staged.version if staged is not None and staged.awaits else None
    if step == SIGN_OFF:
        why = f"Staging v{waiting} awaited approval: {approval.reason}"
        if triggers is not None and triggers.retrain:
            why += f"; triggers fired ({triggers.reason}): the next cycle retrains"
        fired, results = (triggers.fired, triggers.results) if triggers is not None else ([], [])
        return Plan(SIGN_OFF, RetrainDecision(False, fired, results, why, None), f"would_{approval.action}", waiting)
    if step == VALIDATE:
        origin = (f"made by cycle {staged.cycle_run_id}, which ended before judging it" if staged.cycle_run_id
                  else "trained outside a cycle")
        if approval is not None and approval.action == REVALIDATE:
            origin = f"it awaited approval, but {approval.reason}"
        against = "against Production" if production else "against the absolute gate (no Production yet)"
        return Plan(VALIDATE, RetrainDecision(False, [], [], f"Staging v{staged.version} is pending ({origin}): "
                                                         f"validated {against} before any new retrain", None),
                    "would_validate", staged.version)
    if step == BOOTSTRAP:
        created = f" (no store yet: the first cycle creates {unborn})" if unborn else ""
        decision = RetrainDecision(True, [T.BOOTSTRAP], [], f"no Production version: bootstrap{created}", None)
        if waiting is not None:  # a first model awaits approval: no second one on top of it
            decision = hold(decision, waiting, forced=force)
        return Plan(BOOTSTRAP if decision.retrain else NOTHING, decision,
                    "would_retrain" if decision.retrain else "blocked")
    decision = triggers if waiting is None else hold(triggers, waiting, forced=force)
    # triggers are evaluated and reported while one waits, but only a forced retrain supersedes it
    outcome = "would_retrain" if decision.retrain else ("blocked" if decision.blocked_by else "no_retrain")
    return Plan(RETRAIN if decision.retrain else NOTHING, decision, outcome)
