"""The sign-off rule (`decide.approval`): what becomes of a candidate awaiting a person, pure."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from mlflow_retrain.base import tags as T
from mlflow_retrain.policy.parse import parse_config
from mlflow_retrain.decide.approval import (
    EXPIRE,
    HELD,
    PROMOTE,
    REJECT,
    REVALIDATE,
    WAIT,
    hold,
    review,
)
from mlflow_retrain.decide.invariants import ABANDON, TAG, VersionState, diagnose
from mlflow_retrain.decide.verdicts import RetrainDecision, TriggerResult
from mlflow_retrain.base.errors import ConfigError

SINCE = datetime(2011, 5, 31)
WEEK = timedelta(days=7)


def verdict(approval=None, *, age=timedelta(days=1), ttl=WEEK, required=True, by=None, why=None, since=SINCE,
            unit="d"):
    return review(approval=approval, by=by, why=why, waiting_since=since, as_of=SINCE + age, ttl=ttl,
                  required=required, unit=unit)


def test_a_person_approves_or_rejects_with_who_and_why():
    approved = verdict("approved", by="alice", why="checked the weekends")
    assert approved.action == PROMOTE and approved.final and approved.decision == T.PROMOTED
    assert approved.reason == "approved by alice: checked the weekends"
    rejected = verdict(" Rejected ", by="bob", why="holiday peak")
    assert rejected.action == REJECT and rejected.decision == T.REJECTED and "rejected by bob: holiday peak" in rejected.reason


def test_a_tag_set_in_the_ui_carries_no_name_and_says_so():
    ui = verdict("approved")
    assert ui.action == PROMOTE and "no name recorded" in ui.reason and "no reason given" in ui.reason


def test_a_persons_verdict_wins_over_the_ttl_and_over_the_policy_turned_off():
    assert verdict("approved", age=timedelta(days=30)).action == PROMOTE
    assert verdict("rejected", required=False).action == REJECT


def test_nobody_decides_within_the_ttl_in_data_time_expires():
    assert verdict(age=WEEK - timedelta(seconds=1)).action == WAIT
    expired = verdict(age=WEEK)
    assert expired.action == EXPIRE and expired.decision == T.EXPIRED
    assert "approval_ttl 7d" in expired.reason and "7d before 2011-06-07" in expired.reason


def test_waiting_says_until_when_and_without_a_ttl_waits_for_good():
    waiting = verdict()
    assert waiting.reason == "awaiting approval since 2011-05-31; expires as of 2011-06-07 (approval_ttl 7d)"
    assert waiting.action == WAIT and not waiting.final
    assert verdict(age=timedelta(days=400), ttl=None).action == WAIT
    assert "waits until a person decides" in verdict(ttl=None).reason
    assert verdict(since=None, age=timedelta(days=400)).action == WAIT  # no start recorded: cannot expire


def test_the_texts_say_one_unit_from_the_monitoring_window_and_dates_for_daily_ones():
    """Days and dates in a daily policy, hours and times to the minute below one (`decide.words`)."""
    expired = verdict(age=timedelta(days=163), ttl=timedelta(days=120))
    assert expired.reason == ("nobody approved or rejected it within approval_ttl 120d: awaiting since 2011-05-31, "
                              "163d before 2011-11-10")
    hourly = verdict(age=timedelta(hours=30), ttl=timedelta(hours=36), unit="h", since=SINCE + timedelta(hours=5))
    assert hourly.reason == ("awaiting approval since 2011-05-31T05:00; expires as of 2011-06-01T17:00 "
                             "(approval_ttl 36h)")
    late = verdict(age=timedelta(hours=40), ttl=timedelta(hours=36), unit="h")
    assert late.action == EXPIRE and late.reason.endswith("awaiting since 2011-05-31T00:00, 40h before 2011-06-01T16:00")


def test_a_replay_behind_the_wait_does_not_expire_it():
    assert verdict(age=-timedelta(days=10)).action == WAIT


def test_an_unknown_value_is_ignored_not_taken_for_a_verdict():
    typo = verdict("yes")
    assert typo.action == WAIT and "retrain.approval='yes' is neither approved nor rejected: ignored" in typo.reason
    assert verdict("yes", age=WEEK * 2).action == EXPIRE


def test_policy_turned_off_sends_the_candidate_back_to_the_gate():
    again = verdict(required=False)
    assert again.action == REVALIDATE and not again.final and "judged again by the gate" in again.reason


FIRED = RetrainDecision(True, ["metric_threshold"], [TriggerResult(True, "metric_threshold", "mae 90 > max 60")],
                        "mae 90 > max 60")


def test_a_waiting_candidate_holds_retrains_unless_forced():
    held = hold(FIRED, "2", forced=False)
    assert not held.retrain and held.blocked_by == HELD and held.fired == ["metric_threshold"]
    assert held.results == FIRED.results and "v2 awaits a person's approval" in held.reason
    assert hold(FIRED, "2", forced=True) is FIRED
    quiet = RetrainDecision(False, [], [], "no trigger fired")
    assert hold(quiet, "2", forced=False) is quiet


def _policy(**validation):
    return {"model_name": "m", "data": {"path": "d.csv", "timestamp": "t", "target": "y"},
            "validation": {"max_metric": 10, **validation}}


def test_policy_keys_are_validated():
    cfg = parse_config(_policy(require_approval=True, approval_ttl="7d")).validation
    assert cfg.require_approval and cfg.approval_ttl == WEEK
    assert parse_config(_policy()).validation.require_approval is False
    with pytest.raises(ConfigError, match="approval_ttl needs require_approval: true"):
        parse_config(_policy(approval_ttl="7d"))
    with pytest.raises(ConfigError, match="require_approval must be true or false"):
        parse_config(_policy(require_approval="yes"))
    with pytest.raises(ConfigError, match="approval_ttl: 'soon' is not a span"):
        parse_config(_policy(require_approval=True, approval_ttl="soon"))


def _diagnose(*versions: VersionState, staging: str | None = None):
    aliases = {"production": "1", **({"staging": staging} if staging else {})}
    return diagnose(list(versions), aliases, None, use_stages=True, production_alias="production",
                    staging_alias="staging", now="2011-06-01T00:00:00")


PROD = VersionState("1", "Production", {T.DECISION: T.PROMOTED, T.PROMOTED_AT: "2011-04-30T00:00:00", T.TRIGGER: "x"})


def test_awaiting_approval_in_staging_is_healthy_not_pending_forever():
    waiting = VersionState("2", "Staging", {T.DECISION: T.AWAITING_APPROVAL, T.TRIGGER: "x"})
    assert _diagnose(PROD, waiting, staging="2").healthy


def test_awaiting_approval_moved_out_of_staging_by_hand_is_archived_as_abandoned():
    archived = VersionState("2", "Archived", {T.DECISION: T.AWAITING_APPROVAL})
    (finding,) = _diagnose(PROD, archived).findings
    assert finding.repair == TAG and finding.values[T.DECISION] == T.ABANDONED
    loose = VersionState("2", "None", {T.DECISION: T.AWAITING_APPROVAL})
    (finding,) = _diagnose(PROD, loose).findings
    assert finding.repair == ABANDON and "awaits approval outside Staging" in finding.problem
