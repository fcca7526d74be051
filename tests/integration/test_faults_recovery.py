"""Crash anywhere, converge next cycle (2/2): a real SIGKILL at every registry write of a rejection,
a bootstrap, of the reconcile that repairs a half-done promotion, of a person's approval carried
out by a cycle, and of the reconcile that undoes a hand move (see test_faults.py)."""

from __future__ import annotations

import shutil

from fault_harness import kill, points
from faults_common import (
    BOOTSTRAP,
    CYCLE,
    DEGRADED,
    QUIET,
    at_once,
    kill_and_recover,
    kill_everywhere,
    maker,
    probe_points,
)

from mlflow_retrain.base import tags as T


def test_a_kill_at_every_write_of_a_rejection_converges(tmp_path, bootstrapped_template, write_policy, store):
    promotion = probe_points(tmp_path, maker(bootstrapped_template, write_policy, CYCLE, triggers=DEGRADED))
    n = kill_everywhere(tmp_path, maker(bootstrapped_template, write_policy, CYCLE, triggers=DEGRADED,
                                        validation={"max_metric": 10}), skip=promotion)
    assert n >= 5  # the rejection's own writes: the candidate archived with its verdict, release


def test_a_kill_at_every_write_of_a_bootstrap_converges(tmp_path, store_template, write_policy, store):
    n = kill_everywhere(tmp_path, maker(store_template, write_policy, BOOTSTRAP))
    assert n >= 10


def test_a_kill_at_every_write_of_a_reconcile_converges(tmp_path, bootstrapped_template, write_policy, store):
    """A promotion killed after the stage moved and before the alias did (the worst half-move); then
    the cycle that finds it, killed at each of its own writes (finishing the move, closing the dead
    cycle's runs, its reconcile run)."""
    wreck = maker(bootstrapped_template, write_policy, CYCLE, triggers=DEGRADED)(tmp_path / "wreck", 1)[0]
    kill(wreck, "alias production@1")
    n = kill_everywhere(tmp_path, maker(wreck.folder / "mlflow.db", write_policy, CYCLE, triggers=QUIET))
    assert n >= 8
    shutil.rmtree(wreck.folder)


def _kill_the_awaiting_cycle_everywhere(tmp_path, awaiting_template, write_policy, prepare: str, check) -> list[str]:
    """From `awaiting_template` (v2 awaits approval) and `prepare` (fault_harness steps, done by hand
    before the cycle): a cycle as of 2011-06-02 killed at each of its writes, then every copy
    recovered, converged, and `check(outcome, point)`ed. Returns the points."""
    approval = {"require_approval": True, "approval_ttl": "7d"}
    make = maker(awaiting_template, write_policy, {"as_of": "2011-06-02", "via": "inprocess"}, prepare,
                 validation=approval)
    found = points(make(tmp_path / "probe", 1)[0], tmp_path / "points.log")
    copies = make(tmp_path / "copies", len(found))
    at_once(lambda pair: kill_and_recover(*pair, versions_before=2, check=check), zip(copies, found))
    return found


def test_a_kill_at_every_write_of_an_approval_carried_out_converges(tmp_path, awaiting_template, write_policy, store):
    """v2 awaits approval and the retrain.approval tag says approved (as the MLflow UI sets it); the
    cycle that carries it out is killed at each of its writes. Whatever the point, the next cycle
    ends with the person's verdict done: v2 in Production, promoted, v1 archived."""
    def check(outcome, point) -> None:
        assert outcome.stages == {"1": "Archived", "2": "Production"}, (point, outcome)
        assert outcome.tags["2"][T.DECISION] == T.PROMOTED and outcome.tags["2"][T.PROMOTED_AT], (point, outcome)

    found = _kill_the_awaiting_cycle_everywhere(tmp_path, awaiting_template, write_policy, "approved", check)
    assert len(found) >= 10  # lease, the promotion's intent, tags, stage, aliases, v1 retired, audit tag, release


def test_a_kill_at_every_write_of_undoing_a_hand_move_converges(tmp_path, awaiting_template, write_policy, store):
    """v2 awaits approval and someone points the `production` alias at it in the MLflow UI; the cycle
    whose reconcile undoes that (v1 restored, the move recorded on v2) is killed at each of its writes.
    Whatever the point, the next cycle ends with v1 in Production and v2 still waiting for a person."""
    def check(outcome, point) -> None:
        assert outcome.stages == {"1": "Production", "2": "Staging"}, (point, outcome)
        assert outcome.tags["2"][T.DECISION] == T.AWAITING_APPROVAL, (point, outcome)  # its verdict untouched
        assert outcome.tags["2"].get(f"{T.HAND_MOVE}.1"), (point, outcome)

    found = _kill_the_awaiting_cycle_everywhere(tmp_path, awaiting_template, write_policy, "hand_moved", check)
    assert any(p.startswith(f"tag {T.HAND_MOVE}.1") for p in found) and any("alias production" in p for p in found)
