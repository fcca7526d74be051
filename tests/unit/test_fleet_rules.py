"""The fleet's pure parts: exit code, selection, defaults, clashes, folder names, age, reading policies."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from mlflow_retrain.base.errors import ConfigError, FleetError
from mlflow_retrain.fleet.dashboard import pressure
from mlflow_retrain.fleet.policies import read_members
from mlflow_retrain.fleet.rules import (
    age,
    clashes,
    fleet_exit_code,
    folder_names,
    format_age,
    merge,
    parse_selectors,
    refuse_clashes,
    selected,
)
from mlflow_retrain.fleet.task import Row


@pytest.mark.parametrize("codes, expected", [
    ([], 0), ([0, 0], 0), ([0, 3], 3), ([3, 4, 0], 4), ([4, 2, 3], 2), ([2, 1, 4], 1), ([0, 7], 7), ([7, 1], 7),
])
def test_the_fleet_exits_with_its_worst_models_code(codes, expected):
    """1 (crash) > 2 (a model nobody looked at) > 4 (downtime found) > 3 (another cycle at work) > 0."""
    assert fleet_exit_code(codes) == expected


def test_select_is_tag_equals_value_and_every_one_must_hold():
    wanted = parse_selectors(["retrain.enabled=true", " team = pricing "])
    assert wanted == {"retrain.enabled": "true", "team": "pricing"}
    assert selected({"retrain.enabled": "True", "team": "pricing", "other": "x"}, wanted)
    assert not selected({"retrain.enabled": "true"}, wanted)
    assert not selected({"retrain.enabled": "false", "team": "pricing"}, wanted)
    assert selected({}, {})
    assert parse_selectors(["note=a=b"]) == {"note": "a=b"}


@pytest.mark.parametrize("bad", ["retrain.enabled", "=true", ""])
def test_a_select_that_is_not_tag_equals_value_is_refused(bad):
    with pytest.raises(FleetError, match="must be TAG=VALUE"):
        parse_selectors([bad])


def test_one_tag_given_two_values_is_refused():
    with pytest.raises(FleetError, match="two values"):
        parse_selectors(["a=1", "a=2"])


def test_a_models_entry_merges_over_the_defaults_at_every_depth():
    defaults = {"data": {"timestamp": "ts", "target": "y", "features": ["a", "b"]}, "task": "regression",
                "triggers": {"metric_threshold": {"max": 60}, "max_age": "30d"}}
    entry = {"model_name": "m", "data": {"path": "m.csv", "features": ["c"]}, "triggers": {"metric_threshold": {"max": 40}}}
    assert merge(defaults, entry) == {
        "model_name": "m", "task": "regression",
        "data": {"timestamp": "ts", "target": "y", "features": ["c"], "path": "m.csv"},  # a list replaces
        "triggers": {"metric_threshold": {"max": 40}, "max_age": "30d"}}
    assert defaults["data"]["features"] == ["a", "b"]  # the defaults are not changed for the next model


def test_two_policies_naming_one_model_clash():
    named = [("a.yaml", "m1"), ("b.yaml", "m2"), ("c.yaml", "m1")]
    assert clashes(named) == {"m1": ["a.yaml", "c.yaml"]}
    with pytest.raises(FleetError, match=r"^registered model 'm1' is named by 2 policies: a.yaml, c.yaml; one policy"):
        refuse_clashes(named)
    refuse_clashes(named[:2])


def test_each_model_gets_its_own_folder_name():
    assert folder_names(["north", "a b", "a-b", "A-B", "x/y:z", "..."]) == {
        "north": "north", "a b": "a-b", "a-b": "a-b-2", "A-B": "A-B-3", "x/y:z": "x-y-z", "...": "model"}


def test_productions_age_is_counted_in_data_time():
    assert age("2022-02-28T00:00:00", "2022-03-07T00:00:00") == timedelta(days=7)
    assert age("2022-02-28T00:00:00+00:00", "2022-03-01T06:00:00") == timedelta(days=1, hours=6)
    assert age(None, "2022-03-07") is None and age("2022-01-01", None) is None and age("garbage", "2022-01-01") is None
    assert age("2022-03-08", "2022-03-07") == timedelta(0)  # a replay before the promotion
    assert [format_age(s) for s in (timedelta(days=7, hours=5), timedelta(hours=5), None)] == ["7d", "5h", None]


def test_pressure_is_above_one_past_the_threshold_for_errors_and_scores():
    row = Row("m", "p", "no_retrain", "", metric="mae", last_metric=30.0, threshold=60.0)
    assert pressure(row) == 0.5
    assert pressure(Row("m", "p", "o", "", metric="accuracy", last_metric=0.8, threshold=0.9)) == pytest.approx(1.125)
    assert pressure(Row("m", "p", "o", "", metric="mae", last_metric=30.0)) is None
    assert pressure(Row("m", "p", "o", "", metric="r2", last_metric=-0.1, threshold=0.5)) is None


def write(path: Path, raw) -> Path:
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


POLICY = {"model_name": "north", "data": {"path": "north.csv", "timestamp": "ts", "target": "y"}}


def test_a_folder_holds_policies_and_fleet_files(tmp_path):
    write(tmp_path / "b-north.yaml", POLICY)
    write(tmp_path / "a-fleet.yml", {"defaults": {"data": {"timestamp": "ts", "target": "y"}, "task": "regression"},
                                     "models": [{"model_name": "south", "data": {"path": "south.csv"}},
                                                {"model_name": "east", "data": {"path": "east.csv"},
                                                 "training": {"window": "10x"}}]})
    write(tmp_path / "notes.txt", "not a policy")
    members = read_members([tmp_path, tmp_path / "b-north.yaml"])  # a file named twice is read once
    assert [(m.label, m.model_name) for m in members] == [
        (f"{tmp_path / 'a-fleet.yml'} models[0]", "south"), (f"{tmp_path / 'a-fleet.yml'} models[1]", "east"),
        (str(tmp_path / "b-north.yaml"), "north")]
    south = members[0].config()
    assert south.data.target == "y" and south.source == (tmp_path / "a-fleet.yml").resolve()
    assert south.data_path() == (tmp_path / "south.csv").resolve()
    with pytest.raises(ConfigError, match=r"a-fleet.yml models\[1\]: training.window: '10x' is not a span"):
        members[1].config()


@pytest.mark.parametrize("text, message", [
    ("models: [\n", "not valid YAML"),
    ("models: []\n", "models must be a non-empty list"),
    ("defaults: [1]\nmodels: [{model_name: a}]\n", "defaults must be a mapping"),
    ("models: [{model_name: a}]\nextra: 1\n", "extra is not a fleet file key"),
    ("models: [3]\n", r"models\[0\] must be a mapping"),
    ("- 1\n", "must be a mapping of policy keys"),
])
def test_a_broken_file_is_its_own_one_line_error(tmp_path, text, message):
    write(tmp_path / "ok.yaml", POLICY)
    write(tmp_path / "broken.yaml", text)
    members = read_members([tmp_path])
    assert members[1].model_name == "north"
    with pytest.raises(ConfigError, match=message) as caught:
        members[0].config()
    assert "\n" not in str(caught.value) and str(tmp_path / "broken.yaml") in str(caught.value)


def test_policies_that_are_not_there_stop_the_fleet(tmp_path):
    with pytest.raises(FleetError, match="no such file or folder"):
        read_members([tmp_path / "missing"])
    with pytest.raises(FleetError, match=r"no policy files \(\*.yaml, \*.yml\)"):
        read_members([tmp_path])
