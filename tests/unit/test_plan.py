"""The cycle's plan (`decide.plan`): what a cycle does from what it found in the registry, pure.

Every branch a cycle (and a dry run) takes: a person's sign-off carried out first, a pending
candidate validated before anything new, a bootstrap with no Production, the triggers otherwise;
a candidate awaiting a person holds a retrain unless it was forced.
"""

from __future__ import annotations

import pytest

from mlflow_retrain.base import tags as T
from mlflow_retrain.decide.approval import EXPIRE, HELD, PROMOTE, REJECT, REVALIDATE, WAIT, ApprovalVerdict
from mlflow_retrain.decide.plan import (ASSESS, BOOTSTRAP, NOTHING, RETRAIN, SIGN_OFF, VALIDATE, Staged, first_step,
                                        plan)
from mlflow_retrain.decide.verdicts import RetrainDecision, TriggerResult

FIRED = RetrainDecision(True, ["metric_threshold"], [TriggerResult(True, "metric_threshold", "mae 90 > max 80")],
                        "mae 90 > max 80")
QUIET = RetrainDecision(False, [], [TriggerResult(False, "metric_threshold", "mae 40 <= max 80")],
                        "no trigger fired: mae 40 <= max 80")
COOLING = RetrainDecision(False, ["metric_threshold"], FIRED.results, "mae 90 > max 80; but cooldown", "cooldown")
WAITING = Staged("2", T.AWAITING_APPROVAL, "c1")
PENDING = Staged("2", T.PENDING, "0123456789abcdef")


@pytest.mark.parametrize("action", [PROMOTE, REJECT, EXPIRE])
def test_a_final_verdict_is_carried_out_first_and_a_retrain_waits_for_the_next_cycle(action):
    verdict = ApprovalVerdict(action, [f"{action} by alice: checked"])
    assert first_step("1", WAITING, verdict) == SIGN_OFF
    done = plan(production="1", staged=WAITING, approval=verdict, triggers=FIRED, force=True)
    assert (done.step, done.outcome, done.candidate) == (SIGN_OFF, f"would_{action}", "2")
    assert not done.decision.retrain and done.decision.fired == ["metric_threshold"]
    assert done.decision.results == FIRED.results and done.decision.blocked_by is None
    assert done.decision.reason == (f"Staging v2 awaited approval: {action} by alice: checked; triggers fired "
                                    "(mae 90 > max 80): the next cycle retrains")
    quiet = plan(production="1", staged=WAITING, approval=verdict, triggers=QUIET)
    assert quiet.decision.reason == f"Staging v2 awaited approval: {action} by alice: checked"
    first = plan(production=None, staged=WAITING, approval=verdict, triggers=None)  # a first model signed off
    assert first.step == SIGN_OFF and first.decision.fired == [] and first.decision.results == []


def test_a_pending_candidate_is_validated_before_anything_new_is_trained():
    assert first_step("1", PENDING, None) == VALIDATE
    done = plan(production="1", staged=PENDING, approval=None, triggers=None, force=True)
    assert (done.step, done.outcome, done.candidate) == (VALIDATE, "would_validate", "2")
    assert done.decision == RetrainDecision(False, [], [], "Staging v2 is pending (made by cycle 0123456789abcdef, "
                                            "which ended before judging it): validated against Production before "
                                            "any new retrain", None)
    by_hand = plan(production=None, staged=Staged("1", T.PENDING), approval=None, triggers=None)
    assert by_hand.decision.reason == ("Staging v1 is pending (trained outside a cycle): validated against the "
                                       "absolute gate (no Production yet) before any new retrain")
    turned_off = ApprovalVerdict(REVALIDATE, ["validation.require_approval is off now"])
    again = plan(production="1", staged=WAITING, approval=turned_off, triggers=None)
    assert (again.step, again.candidate) == (VALIDATE, "2")
    assert "(it awaited approval, but validation.require_approval is off now)" in again.decision.reason


def test_no_production_bootstraps_unless_a_first_model_awaits_a_person():
    assert first_step(None, None, None) == BOOTSTRAP
    done = plan(production=None, staged=None, approval=None, triggers=None, unborn="/tmp/x/mlflow.db")
    assert (done.step, done.outcome, done.candidate) == (BOOTSTRAP, "would_retrain", None)
    assert done.decision == RetrainDecision(True, [T.BOOTSTRAP], [], "no Production version: bootstrap (no store "
                                            "yet: the first cycle creates /tmp/x/mlflow.db)", None)
    assert plan(production=None, staged=None, approval=None, triggers=None).decision.reason == \
        "no Production version: bootstrap"
    waits = ApprovalVerdict(WAIT, ["awaiting approval"])
    held = plan(production=None, staged=Staged("1", T.AWAITING_APPROVAL), approval=waits, triggers=None)
    assert (held.step, held.outcome) == (NOTHING, "blocked") and held.decision.blocked_by == HELD
    forced = plan(production=None, staged=Staged("1", T.AWAITING_APPROVAL), approval=waits, triggers=None, force=True)
    assert (forced.step, forced.outcome) == (BOOTSTRAP, "would_retrain")


def test_with_production_the_triggers_decide_and_a_waiting_candidate_holds_them():
    assert first_step("1", None, None) == ASSESS and first_step("1", Staged("2", T.REJECTED), None) == ASSESS
    assert plan(production="1", staged=None, approval=None, triggers=FIRED) == \
        plan(production="1", staged=None, approval=None, triggers=FIRED, force=True)
    retrain = plan(production="1", staged=None, approval=None, triggers=FIRED)
    assert (retrain.step, retrain.outcome, retrain.decision) == (RETRAIN, "would_retrain", FIRED)
    assert plan(production="1", staged=None, approval=None, triggers=QUIET).outcome == "no_retrain"
    cooling = plan(production="1", staged=None, approval=None, triggers=COOLING)
    assert (cooling.step, cooling.outcome) == (NOTHING, "blocked")
    waits = ApprovalVerdict(WAIT, ["awaiting approval"])
    assert first_step("1", WAITING, waits) == ASSESS
    held = plan(production="1", staged=WAITING, approval=waits, triggers=FIRED)
    assert (held.step, held.outcome, held.decision.blocked_by) == (NOTHING, "blocked", HELD)
    assert "v2 awaits a person's approval" in held.decision.reason and held.candidate is None
    forced = plan(production="1", staged=WAITING, approval=waits, triggers=FIRED, force=True)
    assert (forced.step, forced.decision) == (RETRAIN, FIRED)
