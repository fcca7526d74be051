from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from mlflow_retrain.policy.load import load_config
from mlflow_retrain.policy.parse import parse_config
from mlflow_retrain.policy.section import parse_span
from mlflow_retrain.base.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {"model_name": "m", "data": {"path": "d.csv", "timestamp": "t", "target": "y", "features": ["a", "b"]}}


def test_bundled_policy_loads_with_every_section():
    config = load_config(REPO / "retrain.yaml")
    assert config.model_name == "bike-demand" and config.data.target == "cnt"
    assert "casual" not in config.data.features and "registered" not in config.data.features
    assert config.training.window == timedelta(days=120) and config.monitoring.window == timedelta(days=7)
    assert config.threshold_limit == 80 and config.gate_threshold == 90 and not config.higher_is_better
    assert config.data_path() == REPO / "data" / "bike_sharing_hourly.csv"


def test_defaults_fill_a_minimal_file():
    config = parse_config(MINIMAL)
    assert config.experiment == "m" and config.task == "regression" and config.metric == "mae"
    assert config.training.estimator.endswith("HistGradientBoostingRegressor")
    assert config.registry.production_alias == "production" and config.registry.use_stages
    assert config.data.duplicates == "keep"  # every row is trained on unless the policy says otherwise
    assert config.triggers.metric_threshold is None


@pytest.mark.parametrize("span, expected", [("14d", timedelta(days=14)), ("12h", timedelta(hours=12)),
                                            ("2w", timedelta(weeks=2)), ("90m", timedelta(minutes=90))])
def test_spans(span, expected):
    assert parse_span(span) == expected


@pytest.mark.parametrize("patch, message", [
    ({"model_nam": "x"}, "f.yaml: model_nam is not a known key"),
    ({"task": "ranking"}, "f.yaml: task must be regression or classification"),
    ({"training": {"window": "3 months"}}, "f.yaml: training.window: '3 months' is not a span"),
    ({"training": {"window": "0d"}}, "training.window: span must be positive"),
    ({"monitoring": {"metric": "accuracy"}}, "monitoring.metric must be one of mae, rmse, r2"),
    ({"triggers": {"metric_threshold": {"min": 3}}}, "triggers.metric_threshold.max is required for metric mae"),
    ({"triggers": {"metric_trend": {"windows": 5}}}, "triggers.metric_trend.max_relative_increase or max_slope"),
    ({"triggers": {"data_drift": {"max_drift_share": 1.5}}}, "max_drift_share must be between 0 and 1"),
    ({"triggers": {"debounce": {"k": 3, "n": 2}}}, "triggers.debounce.k must satisfy 1 <= k <= n"),
    ({"validation": {"max_metric": "high"}}, "validation.max_metric must be a number, got 'high'"),
    ({"registry": {"use_stages": "yes"}}, "registry.use_stages must be true or false"),
    ({"validation": {"min_relative_improvement": 2}}, "validation.min_relative_improvement must be a fraction"),
    ({"task": "classification", "monitoring": {"metric": "roc_auc"}, "validation": {"significance": {}}},
     "f.yaml: validation.significance needs a metric with a per-row loss (mae, rmse, r2, accuracy)"),
    ({"data": {"path": "d", "timestamp": "t", "target": "y", "features": ["a"], "categorical": ["z"]}},
     "data.categorical names ['z'] which are not in data.features"),
    ({"data": {"path": "d", "timestamp": "t", "target": "y", "features": ["y"]}},
     "must not contain the target or timestamp"),
    ({"data": {"path": "d", "timestamp": "t", "target": "y", "exclude": ["y"]}}, "data.exclude must not name the target"),
    ({"training": {"estimator": "xgboost"}}, "training.estimator must be a dotted class"),
    ({"training": {"project": {"uri": "."}, "estimator": "a.B"}}, "training.estimator and training.project are exclusive"),
    ({"training": {"project": {"uri": ".", "env_manager": "pip"}}}, "training.project.env_manager must be one of"),
    ({"training": {"project": {"uri": ".", "backend": "databricks"}}}, "training.project.backend_config is required"),
    ({"training": {"project": {"uri": ".", "parameters": {"as_of": "x"}}}}, "which the controller passes itself"),
    ({"training": {"project": {"uri": ".", "contract": {"as_off": "d"}}}}, "training.project.contract.as_off is not a known key"),
    ({"data": {**MINIMAL["data"], "duplicates": "dedupe"}},
     "f.yaml: data.duplicates must be one of keep, drop, refuse, got 'dedupe'"),
    ({"data": {**MINIMAL["data"], "duplicates": False}}, "f.yaml: data.duplicates must be a string, got False"),
    ({"validation": {"compare": "worse"}},
     "f.yaml: validation.compare must be one of better, not_worse, non_inferior, got 'worse'"),
    ({"validation": {"compare": "not_worse", "margin": 1.5}}, "validation.margin must be a fraction in [0, 1)"),
    ({"validation": {"margin": 0.05}}, "validation.margin applies to compare: not_worse or non_inferior only"),
    ({"validation": {"compare": "not_worse", "min_relative_improvement": 0.02}},
     "validation.min_relative_improvement applies to compare: better only"),
    ({"task": "classification", "monitoring": {"metric": "f1"}, "validation": {"compare": "not_worse"}},
     "validation.compare not_worse needs a metric with a per-row loss"),
])
def test_bad_values_name_the_key_and_the_file(patch, message):
    with pytest.raises(ConfigError) as err:
        parse_config({**MINIMAL, **patch}, origin="f.yaml")
    assert message in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="policy file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)


def test_relative_data_path_resolves_against_the_file(tmp_path):
    path = tmp_path / "sub" / "retrain.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(MINIMAL))
    assert load_config(path).data_path() == path.parent.resolve() / "d.csv"


@pytest.mark.parametrize("text, message", [
    ("model_name: m\nmodel_name: n\n", "model_name is given twice (lines 1 and 2)"),
    ("model_name: m\ntraining:\n  window: 60d\n  holdout: 7d\n  window: 30d\n", "training.window is given twice (lines 3 and 5)"),
    ("model_name: m\ntriggers: {max_age: 7d, max_age: 14d}\n", "triggers.max_age is given twice"),
])
def test_a_key_given_twice_is_refused_naming_it_and_its_lines(tmp_path, text, message):
    path = tmp_path / "retrain.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")):
        load_config(path)


def test_a_merge_key_may_still_be_overridden(tmp_path):
    path = tmp_path / "retrain.yaml"
    data = yaml.safe_dump(MINIMAL["data"], default_flow_style=True).strip()
    path.write_text(f"base: &base {{window: 60d, holdout: 7d}}\nmodel_name: m\ndata: {data}\n"
                    "training:\n  <<: *base\n  window: 30d\n")
    with pytest.raises(ConfigError, match="base is not a known key"):  # parsed: only the unknown key is wrong
        load_config(path)


@pytest.mark.parametrize("name", ["bike's", 'say "hi"', "team/bikes", "a:b", "m@prod", "back\\slash", " m", "",
                                  "tab\there"])
def test_a_model_name_the_registry_cannot_search_for_is_refused(name):
    with pytest.raises(ConfigError, match="model_name"):
        parse_config({**MINIMAL, "model_name": name}, origin="f.yaml")


@pytest.mark.parametrize("alias", ["live one", "latest", "v2", "prod/1"])
def test_an_alias_mlflow_refuses_is_refused_at_load(alias):
    with pytest.raises(ConfigError, match="registry.aliases.production .* is not an alias MLflow accepts"):
        parse_config({**MINIMAL, "registry": {"aliases": {"production": alias}}})


# `monitoring.drift`: features left out of drift, and a test and/or threshold per column
CALENDAR = {"path": "d.csv", "timestamp": "t", "target": "y", "features": ["hour", "workingday", "load"],
            "categorical": ["workingday"]}


def drift_policy(drift: dict, data: dict | None = None) -> dict:
    return {**MINIMAL, "data": data or CALENDAR, "monitoring": {"window": "1d", "drift": drift}}


def test_drift_exclude_and_per_column_rules_are_read():
    config = parse_config(drift_policy({"exclude": ["hour", "workingday"],
                                        "columns": {"load": {"method": "wasserstein", "threshold": 0.3}}}))
    drift = config.data.drift
    assert drift.exclude == ("hour", "workingday") and drift.measured(config.data.features) == ["load"]
    assert (drift.rule("load").method, drift.rule("load").threshold) == ("wasserstein", 0.3)
    assert drift.rule("hour") is None
    assert parse_config(MINIMAL).data.drift.measured(("a", "b")) == ["a", "b"]  # no section: every feature


@pytest.mark.parametrize("drift, data, message", [
    ({"exclude": ["hours"]}, None, "f.yaml: monitoring.drift.exclude names ['hours'], which are not features"),
    ({"columns": {"y": {"threshold": 0.1}}}, None, "monitoring.drift.columns names ['y'], which are not features"),
    ({"exclude": ["t"]}, {"path": "d", "timestamp": "t", "target": "y"}, "monitoring.drift.exclude names ['t']"),
    ({"exclude": ["hour", "workingday", "load"]}, None, "monitoring.drift.exclude leaves out every feature"),
    ({"columns": {"load": {"method": "psi"}}}, None,
     "monitoring.drift.columns.load.method must be one of ks, chisquare, z, wasserstein, jensenshannon"),
    ({"columns": {"load": {"method": "ks", "threshold": 1.0}}}, None,
     "monitoring.drift.columns.load.threshold must be in (0, 1) (a p-value), got 1.0"),
    ({"columns": {"load": {"method": "jensenshannon", "threshold": 0}}}, None, "threshold must be in (0, 1]"),
    ({"columns": {"load": {"method": "wasserstein", "threshold": -1}}}, None, "threshold must be positive"),
    ({"columns": {"load": {"threshold": 1.5}}}, None, "threshold must be in (0, 1) without a method"),
    ({"columns": {"load": {}}}, None, "monitoring.drift.columns.load.method and/or threshold must be set"),
    ({"columns": {"load": {"test": "ks"}}}, None, "monitoring.drift.columns.load.test is not a known key"),
    ({"columns": {"workingday": {"method": "ks"}}}, None,
     "monitoring.drift.columns.workingday.method ks does not test labels"),
    ({"exclude": ["load"], "columns": {"load": {"threshold": 0.1}}}, None,
     "monitoring.drift.columns sets ['load'], which monitoring.drift.exclude leaves out"),
    ({"excluded": ["hour"]}, None, "monitoring.drift.excluded is not a known key"),
])
def test_bad_drift_options_name_the_key(drift, data, message):
    with pytest.raises(ConfigError) as err:
        parse_config(drift_policy(drift, data), origin="f.yaml")
    assert message in str(err.value)


def test_drift_columns_are_checked_again_once_the_data_resolves_the_features():
    """With data.features left out only the data knows the features; the drift measure checks then."""
    from mlflow_retrain.measure.columns import ColumnDriftRule, DriftConfig

    with pytest.raises(ConfigError, match=r"monitoring.drift names \['hours'\], which are not features"):
        DriftConfig(exclude=("hours",)).check(("hour", "load"), ())
    with pytest.raises(ConfigError, match="leaves out every feature"):
        DriftConfig(exclude=("hour", "load")).check(("hour", "load"), ())
    with pytest.raises(ConfigError, match="monitoring.drift.columns.load.method chisquare does not test numbers"):
        DriftConfig(columns=(ColumnDriftRule("load", "chisquare"),)).check(("hour", "load"), ())
