"""`validation.max_ratio_to_naive`: the candidate's error against the naive baseline's on the same holdout,
a gate the target's growth cannot outrun; refused on metrics a naive baseline has no error for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from mlflow_retrain.adapters.data import LabelledData
from mlflow_retrain.base.errors import ConfigError
from mlflow_retrain.decide.baseline import naive_check
from mlflow_retrain.decide.gate import Scores, judge
from mlflow_retrain.loop.evaluate import score_naive
from mlflow_retrain.policy.parse import parse_config

POLICY = """
model_name: m
data: {path: d.csv, timestamp: ts, target: y}
monitoring: {metric: %s}
validation: {max_metric: 100, max_ratio_to_naive: %s}
"""


def test_the_check_states_true_facts_and_a_missing_baseline_decides_nothing():
    assert naive_check("mae", 10.7, 14.2, 1.0) == (
        True, "naive gate: candidate mae 10.7 is not above 1x the naive baseline's 14.2 = 14.2 (pass)")
    assert naive_check("mae", 15.0, 14.2, 1.0) == (
        False, "naive gate: candidate mae 15 is above 1x the naive baseline's 14.2 = 14.2 (fail)")
    assert naive_check("rmse", 15.0, 14.2, 1.1)[0] and not naive_check("mae", float("nan"), 14.2, 1.0)[0]
    assert naive_check("mae", 99.0, None, 1.0) == (
        True, "naive gate: no naive baseline on this holdout (no rows before it to repeat)")


def test_judge_adds_the_check_only_when_configured_and_it_binds_beside_the_absolute_gate():
    config = parse_config(yaml.safe_load(POLICY % ("mae", 1.0)))
    assert config.validation.max_ratio_to_naive == 1.0
    loss = np.ones(3)
    # the target grew: an error of 60 passes max 100 and beats Production, but the naive baseline errs 40
    grown = judge(config, Scores({"mae": 60.0}, loss), Scores({"mae": 80.0}, loss), Scores({"mae": 40.0}, loss))
    assert not grown.promote and grown.reasons[-1].endswith("is above 1x the naive baseline's 40 = 40 (fail)")
    assert judge(config, Scores({"mae": 30.0}, loss), None, Scores({"mae": 40.0}, loss)).promote
    plain = parse_config(yaml.safe_load(POLICY.replace(", max_ratio_to_naive: %s", "") % "mae"))
    assert plain.validation.max_ratio_to_naive is None
    assert judge(plain, Scores({"mae": 60.0}, loss), Scores({"mae": 80.0}, loss)).promote


@pytest.mark.parametrize("metric, ratio, message", [
    ("r2", 1.0, "validation.max_ratio_to_naive compares errors (mae, rmse); monitoring.metric is r2"),
    ("mae", 0, "validation.max_ratio_to_naive must be positive, got 0"),
])
def test_a_ratio_on_a_score_or_not_above_zero_is_refused(metric, ratio, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
        parse_config(yaml.safe_load(POLICY % (metric, ratio)))


def test_the_loop_scores_the_naive_baseline_on_the_holdout_rows_from_the_rows_before_them():
    stamps = pd.date_range("2024-01-01", periods=24 * 10, freq="h")
    y = np.arange(len(stamps), dtype=float)  # grows 24 a day: a day back misses by 24
    config = parse_config(yaml.safe_load(POLICY % ("mae", 1.0)))
    data = LabelledData.from_frame(pd.DataFrame({"ts": stamps, "x": 1.0, "y": y}), config)
    holdout = data.frame.iloc[-24:]
    scored, kind = score_naive(config, data, holdout)
    assert kind == "seasonal naive (a day back)" and scored.metrics["mae"] == pytest.approx(24.0)
    assert score_naive(config, data, data.frame.iloc[:5]) is None  # nothing before the first rows
