"""The challenger (`validation.challenger`) in real cycles on a real sqlite store: placed when the gate's
comparison is inconclusive, scored beside Production on each labelled window, promoted at k wins of N,
archived when it can no longer win, replaced by a new candidate; the backtest replays it exactly."""

from __future__ import annotations

import json
from datetime import timedelta

import pandas as pd
import pytest

from mlflow_retrain.adapters.data import LabelledData
from mlflow_retrain.adapters.registry import Registry, utcnow
from mlflow_retrain.adapters.registry.repair import examine
from mlflow_retrain.base import tags as T
from mlflow_retrain.decide.challenge import WAIT
from mlflow_retrain.loop.cycle import run_cycle
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.usecases.audit import status
from mlflow_retrain.usecases.monitor import run_monitor
from mlflow_retrain.usecases.backtest import default_policies, run_backtest, select
from mlflow_retrain.usecases.replay import fitted_at

CHALLENGER = {"significance": {}, "challenger": {"windows": 3, "wins": 2}}


def _only_on_the_challenger(registry: Registry) -> None:
    """Healthy, and the `challenger` alias on the Staging version that says challenger, or on none."""
    assert examine(registry, utcnow()).healthy
    aliased = [v for v in registry.versions() if T.CHALLENGER in v.aliases]
    assert all(v.stage == "Staging" and v.tags[T.DECISION] == T.CHALLENGER for v in aliased), aliased
    assert len(aliased) <= 1


def test_replay_plays_the_challenger_exactly_as_cycles_do(prod_store, write_policy):
    config = load_config(write_policy(triggers={"metric_threshold": {"max": 35}}, validation=CHALLENGER))
    data = LabelledData.load(config)
    result = run_backtest(config, start="2011-04-30", end="2011-06-25", every=timedelta(days=7), data=data,
                          policies=select(default_policies(config, timedelta(days=7)), ["configured"]))
    state = result.states[0]
    registry = Registry(config)
    retrains, challenges, shown = [], [], None
    for as_of in result.steps[1:-1]:
        report = run_cycle(config, as_of=as_of.isoformat(), via="inprocess", data=data)
        _only_on_the_challenger(registry)
        settled = report.challenger is not None and report.challenger["action"] != WAIT
        if report.outcome == T.CHALLENGER:
            challenges.append((report.as_of, T.CHALLENGER))
            shown = status(config).challenger  # `status` shows it and its score so far
            assert shown["version"] == report.candidate_version and shown["played"] == 0, shown
        if settled:
            challenges.append((report.as_of, report.outcome))
        elif report.outcome in (T.PROMOTED, T.REJECTED, T.CHALLENGER):
            retrains.append((report.as_of, report.outcome))
    # the cycles placed a challenger and its wins promoted it; the replay made the same moves on the same days
    assert [kind for _, kind in challenges] == [T.CHALLENGER, T.PROMOTED], challenges
    assert (state.retrain_points, state.challenges) == (retrains, challenges)
    production = registry.production()
    assert production.version == shown["version"] and T.CHALLENGER not in production.aliases
    assert pd.Timestamp(production.tags[T.AS_OF]) == fitted_at(state.production)
    # the verdict names each window and both scores, appended round by round on the version
    assert production.tags[T.DECISION_REASON].startswith("challenger won 2 of 2 windows (promoted at 2 of 3)")
    played = [json.loads(production.tags[f"{T.CHALLENGER_ROUND}.{n}"]) for n in (1, 2)]
    assert [(r["window"], r["won"]) for r in played] == [(r.window, r.won) for r in state.rounds]
    assert all(r["challenger"] < r["production"] for r in played) and played[0]["window"].startswith(
        production.tags[T.CHALLENGER_SINCE])


def test_a_new_candidate_replaces_the_challenger_and_one_that_cannot_win_is_archived(prod_store, write_policy,
                                                                                    tmp_path):
    config = load_config(write_policy(triggers={"metric_threshold": {"max": 1000}}, validation=CHALLENGER))
    data = LabelledData.load(config)

    def cycle(as_of: str, force: bool = False):
        report = run_cycle(config, as_of=as_of, via="inprocess", data=data, force=force,
                           reason="asked" if force else None)
        _only_on_the_challenger(registry)
        return report

    registry = Registry(config)
    assert cycle("2011-07-02", force=True).outcome == T.PROMOTED  # v2: a Production close to the next candidates
    first = cycle("2011-07-09", force=True)
    assert (first.outcome, first.candidate_version) == (T.CHALLENGER, "3"), first.reason
    assert "inconclusive: the per-row loss reduction's interval [" in registry.get("3").tags[T.DECISION_REASON]
    second = cycle("2011-07-16", force=True)  # the rule: a new candidate replaces the challenger, with why
    assert (second.outcome, second.candidate_version) == (T.CHALLENGER, "4"), second.reason
    replaced = registry.get("3")
    assert (replaced.stage, replaced.tags[T.DECISION]) == ("Archived", T.SUPERSEDED)
    assert replaced.tags[T.DECISION_REASON] == ("superseded in Staging by v4 while it was the challenger "
                                                "(a new candidate replaces it)")
    assert second.challenger["rounds"] and second.challenger["action"] == WAIT  # v3 played a round first
    last = cycle("2011-08-06")
    assert (last.outcome, last.candidate_version, last.challenger["action"]) == (T.REJECTED, "4", "archive")
    lost = registry.get("4")
    assert (lost.stage, lost.tags[T.DECISION]) == ("Archived", T.REJECTED) and not lost.aliases
    assert "can no longer reach 2, archived: 2011-07-16T00:00:00..2011-07-23T00:00:00" in lost.tags[T.DECISION_REASON]
    assert registry.production().version == "2" and status(config).challenger is None
    # `monitor` draws both: each challenger's error beside Production's on the windows it was the challenger
    result = run_monitor(config, data=data, start="2011-07-02", end="2011-08-06", out_dir=tmp_path, log_run=False)
    table = pd.read_csv(result.table, dtype={"challenger_version": str})
    drawn = table.dropna(subset=["challenger"])
    assert list(drawn.challenger_version) == ["3", "4", "4", "4"] and drawn.metric.notna().all()
    rounds = [json.loads(lost.tags[f"{T.CHALLENGER_ROUND}.{n}"]) for n in (1, 2)]
    assert [r["challenger"] for r in rounds] == pytest.approx(list(drawn.challenger[1:3]))
    assert [r["production"] for r in rounds] == pytest.approx(list(drawn.metric[1:3]))
    assert "mae of the challenger" in result.dashboard.read_text()
