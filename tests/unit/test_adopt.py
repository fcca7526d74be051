"""`backtest --apply` rewrites only the policy file's `triggers:` block (pure text work, no store)."""

from __future__ import annotations

from datetime import timedelta

from mlflow_retrain.usecases.adopt import replace_triggers, set_key, triggers_section
from mlflow_retrain.policy.config import TriggersConfig
from mlflow_retrain.decide.triggers.max_age import MaxAge
from mlflow_retrain.decide.triggers.threshold import MetricThreshold
from mlflow_retrain.decide.triggers.trend import MetricTrend

POLICY = """\
# the shop's policy
model_name: sales   # registered model
data: {path: sales.csv, timestamp: day, target: sales}
triggers:
  # fire on a bad day
  metric_threshold: {max: 6}
  cooldown: 3d

# the gate: keep this comment
validation:
  max_metric: 50
"""


def test_only_the_triggers_block_changes():
    after = replace_triggers(POLICY, {"metric_threshold": {"max": 4.5}}, "from the backtest")
    assert after == POLICY.replace("triggers:\n  # fire on a bad day\n  metric_threshold: {max: 6}\n  cooldown: 3d\n",
                                   "triggers:  # from the backtest\n  metric_threshold: {max: 4.5}\n")


def test_no_trigger_at_all_and_a_file_without_triggers():
    assert "triggers: {}  # never\n\n# the gate" in replace_triggers(POLICY, {}, "never")
    bare = "model_name: m\nvalidation: {max_metric: 5}"
    assert replace_triggers(bare, {"max_age": "9d"}, "n") == bare + "\ntriggers:  # n\n  max_age: 9d\n"


def test_a_second_apply_replaces_the_first_one_note_and_all():
    once = replace_triggers(POLICY, {"max_age": "9d", "cooldown": "10d"}, "first")
    twice = replace_triggers(once, {"metric_threshold": {"max": 4.5}}, "second")
    assert twice == replace_triggers(POLICY, {"metric_threshold": {"max": 4.5}}, "second")


def test_options_at_their_defaults_are_left_out_and_spans_read_as_spans():
    triggers = TriggersConfig(configured=(MetricThreshold(max=18.0), MetricTrend(windows=4, max_relative_increase=0.5),
                                          MaxAge(timedelta(days=120))), cooldown=timedelta(days=7))
    assert triggers_section(triggers) == {"metric_threshold": {"max": 18.0},
                                          "metric_trend": {"windows": 4, "max_relative_increase": 0.5},
                                          "max_age": "120d", "cooldown": "7d"}


def test_a_searched_key_is_set_in_place_added_under_its_section_or_appended():
    text = "training:\n    # how long\n    window: 30d   # a month\n    holdout: 5d\nmonitoring: {window: 1d}\n"
    once = set_key(text, "training", "holdout", "2d", "applied")
    assert once == "training:\n    # how long\n    window: 30d   # a month\n    holdout: 2d  # applied\nmonitoring: {window: 1d}\n"
    added = set_key(text, "training", "seed", 3, "applied")
    assert added.startswith("training:\n    seed: 3  # applied\n    # how long\n")
    assert set_key("model_name: m\n", "validation", "compare", "not_worse", "n") == \
        "model_name: m\nvalidation:\n  compare: not_worse  # n\n"
