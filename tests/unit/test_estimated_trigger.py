"""The label-free trigger's verdicts and its policy keys."""

from __future__ import annotations

import pandas as pd
import pytest

from mlflow_retrain.policy.parse import parse_config
from mlflow_retrain.decide.observations import Observations
from mlflow_retrain.decide.triggers.estimated import EstimatedMetric
from mlflow_retrain.base.errors import ConfigError

BASE = {"model_name": "m", "data": {"path": "d.csv", "timestamp": "t", "target": "y", "features": ["a"]}}


def trigger(options: dict, **policy) -> EstimatedMetric:
    config = parse_config({**BASE, **policy, "triggers": {"estimated_metric": options}})
    return next(t for t in config.triggers.configured if isinstance(t, EstimatedMetric))


def seen(estimate, metric="mae", higher=False) -> Observations:
    return Observations(metric=metric, higher_is_better=higher, as_of=pd.Timestamp("2024-01-01"), estimate=estimate)


def test_fires_on_the_estimate_in_the_metrics_direction():
    assert trigger({"max": 10}).check(seen(12.0)).fired
    assert not trigger({"max": 10}).check(seen(8.0)).fired
    result = trigger({"min": 0.9}, task="classification", monitoring={"metric": "accuracy"}).check(
        seen(0.85, "accuracy", True))
    assert result.fired and "estimated accuracy 0.85 (no labels yet) < min 0.9" in result.reason
    assert "no estimate" in trigger({"max": 10}).check(seen(None)).reason


def test_policy_errors_name_the_key():
    with pytest.raises(ConfigError, match="max"):
        trigger({})
    with pytest.raises(ConfigError, match="label-free estimate"):
        trigger({"max": 0.1}, monitoring={"metric": "r2"})
