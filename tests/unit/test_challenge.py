"""The challenger (`validation.challenger`): which rejections are inconclusive, the k-of-N verdict on its
rounds, the rounds a cycle plays, the policy key, and the registry's invariant on its alias. Pure, in ms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from mlflow_retrain.base import tags as T
from mlflow_retrain.base.errors import ConfigError
from mlflow_retrain.decide.challenge import (ARCHIVE, PROMOTE, WAIT, ChallengerRule, Round, inconclusive, play,
                                             verdict)
from mlflow_retrain.decide.gate import Scores, judge
from mlflow_retrain.decide.invariants import DROP_ALIAS, SET_ALIAS, VersionState, diagnose
from mlflow_retrain.loop.challenger import next_rounds
from mlflow_retrain.policy.parse import parse_config

POLICY = """
model_name: m
data: {path: d.csv, timestamp: ts, target: y}
monitoring: {metric: %s}
validation: {max_metric: 100, %s}
"""


def _config(validation: str):
    return parse_config(yaml.safe_load(POLICY % ("mae", validation)))


def test_inconclusive_is_a_rejection_by_the_comparison_alone_whose_interval_contains_zero():
    config = _config("challenger: {windows: 3, wins: 2}")
    assert config.validation.challenger == ChallengerRule(3, 2)
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 20, 400)
    noisy = base + rng.normal(0, 5, 400)  # as good as Production, give or take noise
    # compare: better, no significance: the CI is computed for the challenger all the same
    tie = judge(config, Scores({"mae": float(noisy.mean()) + 0.1}, noisy + 0.1), Scores({"mae": float(base.mean())}, base))
    assert not tie.promote and tie.ci is not None and tie.ci[0] <= 0 <= tie.ci[1] and inconclusive(tie)
    worse = judge(config, Scores({"mae": float(base.mean()) + 5}, base + 5), Scores({"mae": float(base.mean())}, base))
    assert not worse.promote and worse.ci[1] < 0 and not inconclusive(worse)  # clearly worse: rejected
    broken = judge(config, Scores({"mae": 150.0}, noisy), Scores({"mae": float(base.mean())}, base))
    assert not broken.promote and not inconclusive(broken)  # the absolute gate caught it: never a challenger
    first = judge(config, Scores({"mae": 10.0}, noisy), None)
    assert not inconclusive(first) and not inconclusive(tie.__class__(**{**tie.__dict__, "promote": True}))
    off = _config("min_improvement: 0")
    assert off.validation.challenger is None
    assert judge(off, Scores({"mae": 1.0}, base), Scores({"mae": 2.0}, base)).ci is None  # unchanged without it


def test_the_verdict_promotes_at_k_wins_archives_once_k_is_out_of_reach_and_names_every_window():
    rule = ChallengerRule(windows=3, wins=2)
    won, lost = Round("a..b", 10, 50.0, 40.0, True), Round("b..c", 12, 50.0, 60.0, False)
    assert verdict(rule, [], "mae").action == WAIT
    assert verdict(rule, [won], "mae").action == WAIT and verdict(rule, [won, lost], "mae").action == WAIT
    promoted = verdict(rule, [won, lost, won], "mae")
    assert (promoted.action, promoted.wins) == (PROMOTE, 2)
    assert promoted.reason.startswith("challenger won 2 of 3 windows (promoted at 2 of 3): promoted: a..b (10 rows): "
                                      "mae 40 vs Production 50 (won); b..c (12 rows): mae 60 vs Production 50 (lost)")
    assert verdict(rule, [won, won], "mae").action == PROMOTE  # decided as soon as it is certain
    archived = verdict(rule, [lost, lost], "mae")
    assert archived.action == ARCHIVE and "can no longer reach 2" in archived.reason
    assert verdict(ChallengerRule(1, 1), [lost], "mae").action == ARCHIVE


def test_a_round_is_won_only_strictly_and_a_gap_is_no_round():
    assert play("w", 5, 50.0, 49.0, higher_is_better=False).won
    assert not play("w", 5, 50.0, 50.0, higher_is_better=False).won  # a tie is Production's
    assert play("w", 5, 0.8, 0.9, higher_is_better=True).won
    assert play("w", 0, None, 40.0, False) is None and play("w", 5, 50.0, float("nan"), False) is None
    assert Round.from_json(play("w", 5, 50.0, 49.0, False).to_json()) == play("w", 5, 50.0, 49.0, False)


def test_rounds_are_whole_windows_after_the_last_one_and_stop_once_the_verdict_is_final():
    since, day = pd.Timestamp("2024-01-01"), pd.Timedelta("1D")
    seen: list[str] = []

    def score(window):
        seen.append(window.iso())
        return None if window.start == since + day else Round(window.iso(), 3, 10.0, 9.0, True)

    added = next_rounds(ChallengerRule(3, 2), [], since, since + 4.5 * day, day.to_pytimedelta(), score, "mae")
    # the second window has no rows (no round); two wins decide, the fourth window is left unplayed
    assert [r.window for r in added] == [seen[0], seen[2]] and len(seen) == 3
    later = next_rounds(ChallengerRule(3, 3), added, since, since + 4.5 * day, day.to_pytimedelta(), score, "mae")
    assert [r.window for r in later] == [seen[3]] and later[0].window.startswith((since + 3 * day).isoformat())


@pytest.mark.parametrize("validation, message", [
    ("challenger: {windows: 3, wins: 4}", "validation.challenger.wins must be between 1 and windows (3), got 4"),
    ("challenger: {wins: 2}, require_approval: true", "validation.challenger and require_approval both hold"),
    ("challenger: {}, compare: not_worse", "validation.challenger never applies with compare: not_worse"),
    ("challenger: {windows: 2, wins: 1, n: 3}", "validation.challenger"),
])
def test_a_bad_challenger_key_is_one_clear_error(validation, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
        _config(validation)


def test_the_challenger_alias_lives_only_on_the_challenger_in_staging():
    prod = VersionState("1", "Production", {T.DECISION: T.PROMOTED, T.PROMOTED_AT: "2024-01-01"})
    challenger = VersionState("2", "Staging", {T.DECISION: T.CHALLENGER})
    base = {"production": "1", "staging": "2"}
    kw = dict(use_stages=True, production_alias="production", staging_alias="staging", now="2024-02-01")
    assert diagnose([prod, challenger], {**base, T.CHALLENGER: "2"}, None, **kw).healthy
    missing = diagnose([prod, challenger], base, None, **kw).findings
    assert [(f.repair, f.version, f.values) for f in missing] == [(SET_ALIAS, "2", {"stage": T.CHALLENGER})]
    archived = VersionState("2", "Archived", {T.DECISION: T.REJECTED, T.ARCHIVED_AT: "2024-01-20"})
    left = diagnose([prod, archived], {"production": "1", T.CHALLENGER: "2"}, None, **kw).findings
    assert [(f.repair, f.version) for f in left] == [(DROP_ALIAS, "2")]
    # a challenger moved into Production by hand is undone, never kept: repair does not decide
    moved = VersionState("2", "Production", {T.DECISION: T.CHALLENGER})
    hand = diagnose([VersionState("1", "Archived", prod.tags), moved], {"production": "2"}, None, **kw).findings
    assert hand[0].repair == "undo_hand_move" and hand[0].values["restore"] == "1"
