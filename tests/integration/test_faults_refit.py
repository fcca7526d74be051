"""Crash anywhere, converge next cycle: a real SIGKILL at each kind of registry write of a refit
after the gate (`training.refit_on_pass`): registering the refit, the move that stages it in its
validated fit's place, its promotion. The next cycle converges with a refit serving, which only a
gate's recorded pass put there (docs/design.md#refit-after-the-gate)."""

from __future__ import annotations

from fault_harness import Outcome, kinds
from faults_common import CYCLE, DEGRADED, at_once, kill_and_recover, learn, maker

from mlflow_retrain.base import tags as T

REFIT = {"params": {"max_iter": 30}, "window": "60d", "holdout": "7d", "refit_on_pass": True}


def _a_refit_serves(outcome: Outcome, point: str) -> None:
    """Production is a refit whose validated fit says `refitted`, and the gate's reason is on both."""
    serving = next(v for v, stage in outcome.stages.items() if stage == "Production")
    tags = outcome.tags[serving]
    validated = [v for v, t in outcome.tags.items() if t.get(T.DECISION) == T.REFITTED]
    assert tags.get(T.REFIT_OF) and tags[T.DECISION] == T.PROMOTED, (point, outcome)
    assert validated and outcome.tags[validated[-1]][T.DECISION_REASON].startswith(tags[T.DECISION_REASON]), point


def test_a_kill_at_every_kind_of_write_of_a_refit_converges(tmp_path, bootstrapped_template, write_policy, store):
    make = maker(bootstrapped_template, write_policy, CYCLE, triggers=DEGRADED, training=REFIT)
    found = learn(tmp_path / "probe", make, tmp_path / "points.log")
    # the refit's own writes, from its registration (the second: the points before it are the promotion's,
    # killed in test_faults.py) through the move staging it in its validated fit's place to the first
    # write of its promotion (the rest of a promotion is the promotion's too)
    shared = found.index("register@2")
    moves = [i for i, point in enumerate(found) if i > shared and point.startswith(f"model tag {T.INTENT}@")]
    todo = kinds(found[shared:moves[1]]) + [found[moves[1]]]
    at_once(lambda pair: kill_and_recover(*pair, check=_a_refit_serves), zip(make(tmp_path / "copies", len(todo)), todo))
    assert len(todo) >= 6, todo  # register, intent, the validated fit archived, the refit staged, ...


def test_a_staged_refit_is_not_carried_out_once_a_person_moved_production(tmp_path, bootstrapped_template,
                                                                           write_policy, store, monkeypatch):
    """Killed between staging the refit and promoting it; then a person promotes its validated fit by
    hand: the refit's record is gone and Production is not the gate's baseline, so the next cycle
    rejects the refit rather than replace the person's choice."""
    import mlflow
    from click.testing import CliRunner
    from fault_harness import assert_converged, kill, recover

    from mlflow_retrain.cli import cli

    scenario = maker(bootstrapped_template, write_policy, CYCLE, triggers=DEGRADED,
                     training=REFIT)(tmp_path / "moved", 1)[0]
    kill(scenario, f"model tag {T.INTENT}@3")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", scenario.uri)
    monkeypatch.chdir(scenario.folder)
    mlflow.set_tracking_uri(scenario.uri)
    moved = CliRunner().invoke(cli, ["promote", "2", "--config", str(scenario.policy), "--reason", "the team's pick",
                                     "--as-of", "2011-05-31"])
    assert moved.exit_code == 0, moved.output
    outcome = recover(scenario)
    assert_converged(outcome, "a person's promote after the refit was staged", versions_before=3)
    assert outcome.aliases["production"] == "2" and outcome.tags["3"][T.DECISION] == T.REJECTED, outcome
    assert "v2 no longer says refitted" in outcome.tags["3"][T.DECISION_REASON], outcome.tags["3"]
    assert "Production is now v2" in outcome.tags["3"][T.DECISION_REASON]
