"""`decide.invariants.diagnose` over plain data, and the rollback rule of `controller.previous_production`.

No store here: the registry is a list of `VersionState` (what `registry.repair.examine` builds from
MLflow) and an alias map; the rollback rule reads a stand-in registry with `production()` and
`versions()`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from mlflow_retrain.base import tags as T
from mlflow_retrain.decide.invariants import (ABANDON, ARCHIVED, DROP_ALIAS, FINISH_INTENT, NONE, PRODUCTION,
                                              SET_ALIAS, SET_ASIDE_INTENT, SET_STAGE, STAGE_PENDING, STAGING, TAG,
                                              UNDO_HAND_MOVE, VersionState, diagnose)
from mlflow_retrain.adapters.registry.moves import CorruptIntent, Intent

NOW = "2011-07-01T00:00:00"
PROMOTED = {T.DECISION: T.PROMOTED, T.DECISION_REASON: "better", T.PROMOTED_AT: "2011-05-31T00:00:00",
            T.AS_OF: "2011-05-31T00:00:00"}
FORMER = {T.DECISION: T.PROMOTED, T.DECISION_REASON: "bootstrap", T.PROMOTED_AT: "2011-04-30T00:00:00",
          T.ARCHIVED_AT: "2011-05-31T00:00:00"}
PENDING = {T.DECISION: T.PENDING}


def v(version: int, stage: str, **tags: str) -> VersionState:
    return VersionState(str(version), stage, dict(tags))


def promoted(version: int, stage: str = PRODUCTION, **extra: str) -> VersionState:
    return VersionState(str(version), stage, {**PROMOTED, **extra})


def former(version: int, stage: str = ARCHIVED, **extra: str) -> VersionState:
    return VersionState(str(version), stage, {**FORMER, **extra})


def pending(version: int, stage: str = NONE) -> VersionState:
    return VersionState(str(version), stage, dict(PENDING))


def run(versions, aliases=None, intent=None, *, use_stages=True, corrupt=None):
    return diagnose(versions, dict(aliases or {}), intent, use_stages=use_stages, production_alias="production",
                    staging_alias="staging", now=NOW, corrupt_intent=corrupt)


def repairs(diagnosis) -> list[tuple[str, str | None]]:
    return [(f.repair, f.version) for f in diagnosis.findings]


# ---- healthy ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_stages", [True, False])
def test_one_production_with_its_alias_and_an_archived_former_one_is_healthy(use_stages):
    versions = [promoted(2), former(1)]
    diagnosis = run(versions, {"production": "2"}, use_stages=use_stages)
    assert diagnosis.healthy and diagnosis.findings == []
    assert diagnosis.to_dict() == {"healthy": True, "findings": []}


@pytest.mark.parametrize("use_stages", [True, False])
def test_a_pending_candidate_in_staging_with_its_alias_is_healthy(use_stages):
    versions = [pending(3, STAGING), promoted(2), former(1)]
    assert run(versions, {"production": "2", "staging": "3"}, use_stages=use_stages).healthy


def test_a_registry_with_no_version_is_healthy():
    assert run([], {}).healthy and run([], {}, use_stages=False).healthy


def test_a_rejected_candidate_archived_and_never_promoted_needs_no_archived_at():
    rejected = v(3, ARCHIVED, **{T.DECISION: T.REJECTED, T.DECISION_REASON: "worse"})
    assert run([rejected, promoted(2), former(1)], {"production": "2"}).healthy


@pytest.mark.parametrize("use_stages", [True, False])
def test_first_models_rejected_by_the_gate_and_no_production_is_healthy(use_stages):
    """Nothing in Production is not a fault: each first model that failed the gate is archived with
    its verdict, and the next cycle trains another."""
    rejected = [v(n, ARCHIVED if use_stages else NONE, **{T.DECISION: T.REJECTED, T.ARCHIVED_AT: NOW,
                                                          T.DECISION_REASON: "absolute gate: (fail)"}) for n in (2, 1)]
    assert run(rejected, {}, use_stages=use_stages).healthy


# ---- 1. a move cut short ---------------------------------------------------------------------------
@pytest.mark.parametrize("use_stages", [True, False])
def test_an_intent_left_behind_is_the_only_finding_whatever_else_looks_wrong(use_stages):
    # the half-done move explains the rest (two Productions, an alias elsewhere, a pending stray):
    # finishing it comes first, the next pass diagnoses what is left
    versions = [pending(4), promoted(3), promoted(2), former(1, stage=NONE)]
    diagnosis = run(versions, {"production": "2"}, "v3 to Production (displacing v2)", use_stages=use_stages)
    assert repairs(diagnosis) == [(FINISH_INTENT, None)]
    assert "v3 to Production (displacing v2)" in diagnosis.findings[0].problem
    assert not diagnosis.healthy
    assert diagnosis.to_dict()["findings"][0]["repair"] == FINISH_INTENT


GOOD_INTENT = {"action": "promote", "version": "3", "previous": "2", "when": "2011-05-31T00:00:00",
               "wall": "2024-01-01T00:00:00+00:00", "tags": {T.DECISION: T.PROMOTED}, "previous_tags": {}, "by": "r"}


def test_an_intent_written_by_the_tool_reads_back_as_itself():
    intent = Intent(**GOOD_INTENT)
    assert Intent.from_json(intent.to_json()) == intent


@pytest.mark.parametrize("text, why", [
    ("{not json", "not JSON"),
    ('{"action": "promote", "version": "99"}', "not an intent"),  # valid JSON, another shape
    ("[1, 2]", "not an intent"),
    ("[" * 100_000, "not JSON"),  # nested past the parser's recursion limit
    (json.dumps({**GOOD_INTENT, "extra": 1}), "not an intent"),
    (json.dumps({**GOOD_INTENT, "action": "delete"}), "bad action"),
    (json.dumps({**GOOD_INTENT, "version": 3}), "bad version"),
    (json.dumps({**GOOD_INTENT, "version": "\u00b2"}), "bad version"),  # a digit to str.isdigit, not to int()
    (json.dumps({**GOOD_INTENT, "previous": "-1"}), "bad previous"),
    (json.dumps({**GOOD_INTENT, "when": "yesterday"}), "bad when"),
    (json.dumps({**GOOD_INTENT, "tags": {T.DECISION: 1}}), "bad tags"),
    (json.dumps({**GOOD_INTENT, "previous_tags": []}), "bad previous_tags"),
    (json.dumps({**GOOD_INTENT, "by": None}), "bad by"),
])
def test_anything_else_in_the_intent_tag_is_corrupt_and_says_why(text, why):
    with pytest.raises(CorruptIntent, match=why):
        Intent.from_json(text)


@pytest.mark.parametrize("use_stages", [True, False])
def test_a_corrupt_intent_is_set_aside_and_explains_nothing_else(use_stages):
    diagnosis = run([promoted(2), former(1)], {"production": "2"}, use_stages=use_stages,
                    corrupt="not JSON (Expecting property name)")
    assert repairs(diagnosis) == [(SET_ASIDE_INTENT, None)]
    assert "retrain.intent is corrupt (not JSON" in diagnosis.findings[0].problem
    # what else is wrong is diagnosed beside it, as if there were no intent
    diagnosis = run([pending(4), promoted(3), former(2)], {"production": "3"}, use_stages=use_stages, corrupt="bad by")
    assert repairs(diagnosis) == [(SET_ASIDE_INTENT, None), (STAGE_PENDING, "4")]


# ---- 6. only a gate or a recorded person puts a version into Production -----------------------------
def _wall_promoted(version: int, stage: str, minute: int) -> VersionState:
    return promoted(version, stage, **{T.PROMOTED_WALL: f"2024-01-01T12:{minute:02d}:00+00:00"})


NOBODY_APPROVED = [{T.DECISION: T.REJECTED, T.ARCHIVED_AT: NOW}, {T.DECISION: T.EXPIRED}, {T.DECISION: T.ABANDONED},
                   {T.DECISION: T.PENDING}, {T.DECISION: T.AWAITING_APPROVAL},
                   {T.DECISION: T.AWAITING_APPROVAL, T.APPROVAL: "maybe"}, {T.AS_OF: "2011-05-31T00:00:00"},
                   {T.PROMOTED_AT: "2011-05-31T00:00:00"}]


@pytest.mark.parametrize("tags", NOBODY_APPROVED)
@pytest.mark.parametrize("use_stages", [True, False])
def test_the_alias_moved_by_hand_onto_a_version_nobody_approved_restores_the_last_audited_production(tags, use_stages):
    # v1 was promoted last (a rollback to it at minute 9), v2 before: v1 is the audited Production
    moved = VersionState("3", PRODUCTION if not use_stages else ARCHIVED, dict(tags))
    diagnosis = run([moved, _wall_promoted(2, ARCHIVED, 5), _wall_promoted(1, PRODUCTION, 9)], {"production": "3"},
                    use_stages=use_stages)
    (finding,) = diagnosis.findings
    assert (finding.repair, finding.version) == (UNDO_HAND_MOVE, "3")
    assert finding.values == {"found": "alias production", "restore": "1"}
    assert "by hand" in finding.problem and "v1, the last audited Production, restored" in finding.problem
    assert (tags.get(T.DECISION) or "no retrain.decision") in finding.problem


def test_the_stage_moved_by_hand_onto_a_rejected_version_is_undone_too():
    rejected = v(3, PRODUCTION, **{T.DECISION: T.REJECTED, T.ARCHIVED_AT: NOW})
    diagnosis = run([rejected, promoted(2, ARCHIVED), former(1)], {"production": "2"})
    assert [(f.repair, f.version, f.values) for f in diagnosis.findings] == [
        (UNDO_HAND_MOVE, "3", {"found": "stage Production", "restore": "2"})]
    both = run([rejected, promoted(2, ARCHIVED), former(1)], {"production": "3"}).findings[0]
    assert both.values["found"] == "alias production and stage Production"


def test_a_version_nobody_approved_with_no_audited_production_leaves_production():
    rejected = {T.DECISION: T.REJECTED, T.ARCHIVED_AT: NOW, T.AS_OF: "2011-05-31T00:00:00"}
    diagnosis = run([v(2, PRODUCTION, **rejected)], {"production": "2"})
    assert [(f.repair, f.values["restore"]) for f in diagnosis.findings] == [(UNDO_HAND_MOVE, "")]
    assert "no audited Production to restore" in diagnosis.findings[0].problem


def test_a_model_served_before_the_tool_is_kept_and_its_promotion_recorded_not_taken_out():
    # no retrain.decision anywhere: the team's own Production when they start using the tool
    diagnosis = run([v(2, PRODUCTION, **{T.AS_OF: "2011-05-31T00:00:00"}), v(1, ARCHIVED)], {"production": "2"})
    assert all(f.repair != UNDO_HAND_MOVE for f in diagnosis.findings)
    (values,) = [f.values for f in diagnosis.findings if f.version == "2"]
    assert values[T.DECISION] == T.PROMOTED and "a model served before this tool" in values[T.DECISION_REASON]


def test_a_version_a_person_approved_moved_into_production_by_hand_stays_and_its_promotion_is_recorded():
    # awaiting approval, the retrain.approval tag says approved: the person decided, the hand only moved it
    approved = v(3, PRODUCTION, **{T.DECISION: T.AWAITING_APPROVAL, T.APPROVAL: "Approved ", T.APPROVAL_BY: "ana",
                                   T.DECISION_REASON: "relative gate (pass)", T.AS_OF: "2011-05-31T00:00:00"})
    diagnosis = run([approved, promoted(2, ARCHIVED), former(1)], {"production": "3"})
    assert repairs(diagnosis) == [(TAG, "3"), (TAG, "2")]  # v3's promotion, v2's archived_at
    values = diagnosis.findings[0].values
    assert values[T.DECISION] == T.PROMOTED and values[T.PROMOTED_AT] == "2011-05-31T00:00:00"
    assert values[T.DECISION_REASON].startswith("approved by ana")
    assert values[T.DECISION_REASON].endswith("relative gate (pass)")  # the gate's reason kept


def test_a_former_production_moved_back_by_hand_is_approved_and_kept():
    # promoted once by the gate: the alias put back on it is a rollback by hand, not a new decision
    diagnosis = run([promoted(2), former(1)], {"production": "1"})
    assert all(f.repair != UNDO_HAND_MOVE for f in diagnosis.findings)


# ---- 2. one Production, stage and alias agreeing ---------------------------------------------------
def test_stage_on_v2_but_alias_on_v1_the_alias_wins_and_v2_is_archived():
    # both in Production by stage; the alias names v1: v1 stays, v2 (newer, but not served) leaves
    diagnosis = run([promoted(2), promoted(1)], {"production": "1"})
    assert repairs(diagnosis) == [(SET_STAGE, "2")]
    assert diagnosis.findings[0].values == {"stage": ARCHIVED}
    assert "alias is on v1" in diagnosis.findings[0].problem


def test_stage_on_v2_and_the_alias_on_archived_v1_the_alias_still_wins():
    # what MLflow 3 serves (the alias) is the authority: v2 leaves Production, v1 gets the stage back
    diagnosis = run([promoted(2), former(1)], {"production": "1"})
    assert sorted(repairs(diagnosis)) == [(SET_STAGE, "1"), (SET_STAGE, "2")]
    by_version = {f.version: f.values for f in diagnosis.findings}
    assert by_version == {"2": {"stage": ARCHIVED}, "1": {"stage": PRODUCTION}}
    # never the other way round: nothing moves the alias off v1
    assert all(f.repair not in (SET_ALIAS, DROP_ALIAS) for f in diagnosis.findings)


def test_alias_missing_while_a_version_is_in_production_sets_the_alias():
    diagnosis = run([promoted(2), former(1)], {})
    assert repairs(diagnosis) == [(SET_ALIAS, "2")]
    assert diagnosis.findings[0].values == {"stage": PRODUCTION}


def test_alias_on_a_version_that_does_not_exist_is_moved_to_the_production_holder():
    diagnosis = run([promoted(2), former(1)], {"production": "9"})
    assert repairs(diagnosis) == [(SET_ALIAS, "2")]


def test_two_versions_in_production_and_no_alias_keep_the_newest():
    diagnosis = run([promoted(3), promoted(2), former(1)], {})
    assert sorted(repairs(diagnosis)) == [(SET_ALIAS, "3"), (SET_STAGE, "2")]
    archive = next(f for f in diagnosis.findings if f.repair == SET_STAGE)
    assert archive.values == {"stage": ARCHIVED}


def test_two_versions_in_production_with_the_alias_on_the_older_keep_the_aliased_one():
    diagnosis = run([promoted(3), promoted(2), former(1)], {"production": "2"})
    assert repairs(diagnosis) == [(SET_STAGE, "3")]
    assert diagnosis.findings[0].values == {"stage": ARCHIVED}


def test_the_alias_on_a_version_whose_stage_is_none_gives_it_the_stage():
    diagnosis = run([promoted(2, stage=NONE), former(1)], {"production": "2"})
    assert repairs(diagnosis) == [(SET_STAGE, "2")]
    assert diagnosis.findings[0].values == {"stage": PRODUCTION}


def test_a_staging_alias_on_an_archived_version_is_dropped_the_terminal_stage_wins():
    rejected = v(3, ARCHIVED, **{T.DECISION: T.REJECTED, T.ARCHIVED_AT: "2011-06-30T00:00:00"})
    diagnosis = run([rejected, promoted(2), former(1)], {"production": "2", "staging": "3"})
    assert repairs(diagnosis) == [(DROP_ALIAS, "3")]
    assert diagnosis.findings[0].values == {"stage": STAGING}


def test_two_versions_in_staging_keep_the_aliased_one():
    versions = [pending(4, STAGING), pending(3, STAGING), promoted(2), former(1)]
    diagnosis = run(versions, {"production": "2", "staging": "3"})
    assert (SET_STAGE, "4") in repairs(diagnosis)
    assert next(f for f in diagnosis.findings if f.version == "4").values == {"stage": ARCHIVED}
    assert all(f.version != "3" for f in diagnosis.findings)


# ---- 4. nothing pending forever ----------------------------------------------------------------------
@pytest.mark.parametrize("use_stages", [True, False])
def test_pending_versions_outside_staging_the_newest_is_staged_the_older_abandoned(use_stages):
    versions = [pending(4), pending(3), pending(2), promoted(1)]
    diagnosis = run(versions, {"production": "1"}, use_stages=use_stages)
    assert repairs(diagnosis) == [(STAGE_PENDING, "4"), (ABANDON, "3"), (ABANDON, "2")]


def test_a_pending_version_is_not_staged_while_staging_holds_a_candidate():
    # one candidate is judged at a time: the one already in Staging; the unplaced one is abandoned
    versions = [pending(3), pending(2, STAGING), promoted(1)]
    diagnosis = run(versions, {"production": "1", "staging": "2"})
    assert repairs(diagnosis) == [(ABANDON, "3")]


def test_an_archived_version_still_pending_is_tagged_abandoned():
    versions = [pending(3, ARCHIVED), promoted(2), former(1)]
    diagnosis = run(versions, {"production": "2"})
    assert repairs(diagnosis) == [(TAG, "3")]
    assert diagnosis.findings[0].values[T.DECISION] == T.ABANDONED
    assert diagnosis.findings[0].values[T.DECISION_REASON]


# ---- 5. audit tags complete ---------------------------------------------------------------------------
def test_production_without_promoted_at_nor_as_of_gets_now():
    diagnosis = run([v(2, PRODUCTION, **{T.DECISION: T.PROMOTED})], {"production": "2"})
    assert repairs(diagnosis) == [(TAG, "2")]
    assert diagnosis.findings[0].values == {T.PROMOTED_AT: NOW}


@pytest.mark.parametrize("stage", [ARCHIVED, NONE])
def test_a_former_production_without_archived_at_is_stamped_with_its_successors_promotion(stage):
    left = v(1, stage, **{T.DECISION: T.PROMOTED, T.PROMOTED_AT: "2011-04-30T00:00:00"})
    diagnosis = run([promoted(2), left], {"production": "2"})
    assert repairs(diagnosis) == [(TAG, "1")]
    assert diagnosis.findings[0].values == {T.ARCHIVED_AT: PROMOTED[T.PROMOTED_AT]}


# ---- use_stages: false (aliases alone) --------------------------------------------------------------
# `registry.versions` then derives the stage from the aliases: Production / Staging by alias, else
# Archived when the version carries `archived_at`, else None.
def test_aliases_only_stale_stages_are_never_repaired():
    # with use_stages false the registry's stages are not read: stage values are derived, and no
    # finding may ask for a stage transition
    diagnosis = run([promoted(2), former(1)], {"production": "2"}, use_stages=False)
    assert diagnosis.healthy
    diagnosis = run([promoted(3), promoted(2, stage=NONE), former(1)], {"production": "3"}, use_stages=False)
    assert all(f.repair != SET_STAGE for f in diagnosis.findings)


def test_aliases_only_a_former_production_without_archived_at_is_tagged():
    left = v(1, NONE, **{T.DECISION: T.PROMOTED, T.PROMOTED_AT: "2011-04-30T00:00:00"})
    diagnosis = run([promoted(2), left], {"production": "2"}, use_stages=False)
    assert repairs(diagnosis) == [(TAG, "1")]


def test_aliases_only_a_staging_alias_also_on_production_is_dropped():
    diagnosis = run([promoted(2), former(1)], {"production": "2", "staging": "2"}, use_stages=False)
    assert repairs(diagnosis) == [(DROP_ALIAS, "2")]
    assert diagnosis.findings[0].values == {"stage": STAGING}


def test_aliases_only_an_archived_version_still_pending_is_tagged_abandoned_not_staged_again():
    # with aliases alone, Archived is `archived_at` without an alias (`Versions._info`); as with stages,
    # the version is done: it says abandoned, and is never brought back to Staging to be judged
    versions = [pending(3, ARCHIVED), promoted(2), former(1)]
    diagnosis = run(versions, {"production": "2"}, use_stages=False)
    assert repairs(diagnosis) == [(TAG, "3")], diagnosis.findings
    assert diagnosis.findings[0].values[T.DECISION] == T.ABANDONED


def test_aliases_only_a_pending_version_with_the_staging_alias_is_not_a_stray():
    versions = [pending(3, STAGING), promoted(2), former(1)]
    assert run(versions, {"production": "2", "staging": "3"}, use_stages=False).healthy


# ---- controller.previous_production: the rollback rule ------------------------------------------------
class _Info:
    """The fields of `registry.VersionInfo` the rule reads."""

    def __init__(self, version: int, stage: str, **tags: str):
        self.version, self.stage, self.tags = str(version), stage, dict(tags)

    @property
    def number(self) -> int:
        return int(self.version)


class _Registry:
    name = "bikes"

    def __init__(self, *versions: _Info):
        self._versions = list(versions)

    def versions(self):
        return sorted(self._versions, key=lambda x: x.number, reverse=True)

    def production(self):
        return next((x for x in self._versions if x.stage == PRODUCTION), None)


def _wall(minute: int) -> str:
    return datetime(2024, 1, 1, 12, minute, tzinfo=UTC).isoformat()


def _was_promoted(version: int, stage: str, minute: int, **extra: str) -> _Info:
    return _Info(version, stage, **{T.PROMOTED_AT: "2011-05-31T00:00:00", T.PROMOTED_WALL: _wall(minute), **extra})


@pytest.fixture
def previous_production():
    from mlflow_retrain.loop.manual import previous_production

    return previous_production


def test_rollback_target_is_the_most_recently_promoted_other_version(previous_production):
    registry = _Registry(_was_promoted(1, ARCHIVED, 1), _was_promoted(2, ARCHIVED, 2), _was_promoted(3, PRODUCTION, 3))
    assert previous_production(registry).version == "2"


def test_rollback_orders_by_promotion_time_not_version_number(previous_production):
    # v1 was promoted again (by hand) after v2: it is the one before v3
    registry = _Registry(_was_promoted(1, ARCHIVED, 4), _was_promoted(2, ARCHIVED, 2), _was_promoted(3, PRODUCTION, 5))
    assert previous_production(registry).version == "1"


def test_rollback_walks_back_and_never_toggles(previous_production):
    # v3 was rolled back (at minute 6) to v2 (promoted again at minute 7): next is v1, not v3
    registry = _Registry(_was_promoted(1, ARCHIVED, 1), _was_promoted(2, PRODUCTION, 7),
                         _was_promoted(3, ARCHIVED, 3, **{T.ROLLED_BACK_WALL: _wall(6)}))
    assert previous_production(registry).version == "1"


def test_a_version_promoted_again_after_its_rollback_is_a_target_again(previous_production):
    registry = _Registry(_was_promoted(1, ARCHIVED, 1), _was_promoted(2, PRODUCTION, 9),
                         _was_promoted(3, ARCHIVED, 8, **{T.ROLLED_BACK_WALL: _wall(6)}))
    assert previous_production(registry).version == "3"


def test_never_promoted_and_staging_versions_are_not_rollback_targets(previous_production):
    registry = _Registry(_Info(4, STAGING, **{T.DECISION: T.PENDING}),
                         _Info(3, ARCHIVED, **{T.DECISION: T.REJECTED}),
                         _was_promoted(2, PRODUCTION, 2), _was_promoted(1, ARCHIVED, 1))
    assert previous_production(registry).version == "1"


def test_nothing_to_roll_back_to_is_a_registry_error(previous_production):
    from mlflow_retrain.base.errors import RegistryError

    with pytest.raises(RegistryError, match="no earlier Production version"):
        previous_production(_Registry(_was_promoted(1, PRODUCTION, 1)))
    with pytest.raises(RegistryError, match="no earlier Production version"):
        previous_production(_Registry(_was_promoted(2, PRODUCTION, 2),
                                      _was_promoted(1, ARCHIVED, 1, **{T.ROLLED_BACK_WALL: _wall(3)})))
