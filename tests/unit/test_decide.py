"""The decision core stays free of MLflow and Evidently; triggers are found by name, unknown ones listed."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from mlflow_retrain.policy.parse import parse_config
from mlflow_retrain.decide.plugins import TRIGGERS, installed
from mlflow_retrain.base.errors import ConfigError

MINIMAL = {"model_name": "m", "data": {"path": "d.csv", "timestamp": "t", "target": "y", "features": ["a"]}}


def test_the_core_imports_neither_mlflow_nor_evidently():
    code = ("import sys, mlflow_retrain.decide, mlflow_retrain.decide.plugins as p; p.installed(p.TRIGGERS); "
            "import mlflow_retrain.policy.config, mlflow_retrain.decide.window; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'evidently')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_builtin_trigger_is_one_file_found_by_name():
    builtin = installed(TRIGGERS)
    assert {"metric_threshold", "metric_trend", "data_drift", "max_age", "new_data"} <= set(builtin)
    assert all(cls.__module__ == f"mlflow_retrain.decide.triggers.{cls.__module__.rsplit('.', 1)[1]}"
               for cls in builtin.values())


def test_an_unknown_trigger_is_one_line_listing_what_is_installed():
    with pytest.raises(ConfigError) as err:
        parse_config({**MINIMAL, "triggers": {"metric_treshold": {"max": 3}}}, origin="f.yaml")
    message = str(err.value)
    assert "\n" not in message and message.startswith("f.yaml: triggers.metric_treshold is not a known key (installed triggers: ")
    assert "data_drift, estimated_metric, max_age, metric_threshold, metric_trend, new_data" in message


def test_triggers_keep_their_rank_order_whatever_the_file_order():
    config = parse_config({**MINIMAL, "triggers": {"max_age": "30d", "data_drift": {}, "metric_threshold": {"max": 9}}})
    assert [t.name for t in config.triggers.configured] == ["metric_threshold", "data_drift", "max_age"]
    assert config.triggers.new_data is None and config.triggers.needs("drift")
    with pytest.raises(AttributeError):
        config.triggers.not_a_trigger


def test_the_holdout_is_cut_to_the_rows_production_was_not_fitted_on():
    """A Production refitted through its own as-of has seen the start of the next holdout when cycles
    come closer than the holdout: both models are scored on the rest, as in the backtest's replay."""
    from mlflow_retrain.decide.window import Window, unseen

    holdout = Window(pd.Timestamp("2012-06-01"), pd.Timestamp("2012-06-15"))
    assert unseen(holdout, pd.Timestamp("2012-06-08")) == Window(pd.Timestamp("2012-06-08"), pd.Timestamp("2012-06-15"))
    assert unseen(holdout, pd.Timestamp("2012-05-18")) == holdout  # none of it seen: the whole holdout
    assert unseen(holdout, pd.Timestamp("2012-06-01")) == holdout  # (start, end]: the start row is not in it
    assert unseen(holdout, pd.Timestamp("2012-06-15")) == holdout  # all of it seen: nothing else to score on
    assert unseen(holdout, None) == holdout  # a version with no training window recorded
