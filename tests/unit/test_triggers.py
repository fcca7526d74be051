"""Each trigger over plain numbers: fires or not, with a reason that carries the numbers."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from types import SimpleNamespace

from mlflow_retrain.decide import verdicts, words
from mlflow_retrain.decide.triggers.drift import data_drift
from mlflow_retrain.decide.triggers.max_age import max_age
from mlflow_retrain.decide.triggers.new_data import new_data
from mlflow_retrain.decide.triggers.threshold import metric_threshold
from mlflow_retrain.decide.triggers.trend import metric_trend

# the pure functions, wherever their trigger's file keeps them
t = SimpleNamespace(**{k: v for k, v in vars(verdicts).items() if not k.startswith("_")}, data_drift=data_drift,
                    max_age=max_age, new_data=new_data, metric_threshold=metric_threshold, metric_trend=metric_trend)

T0 = datetime(2012, 6, 1)


@pytest.mark.parametrize("value, hib, limit, fired, text", [
    (85.0, False, 80.0, True, "mae 85 > max 80"),
    (80.0, False, 80.0, False, "mae 80 <= max 80"),
    (0.93, True, 0.95, True, "mae 0.93 < min 0.95"),
    (0.96, True, 0.95, False, "mae 0.96 >= min 0.95"),
    (None, False, 80.0, False, "no mae to compare"),
    (float("nan"), False, 80.0, False, "no mae to compare"),
])
def test_metric_threshold(value, hib, limit, fired, text):
    result = t.metric_threshold(value, metric="mae", higher_is_better=hib, limit=limit)
    assert result.fired is fired and result.reason.startswith(text)


def test_metric_trend_relative_and_slope():
    rising = [50.0, 55.0, 60.0, 66.0]
    fired = t.metric_trend(rising, metric="mae", higher_is_better=False, windows=4, max_relative_increase=0.25)
    assert fired.fired and "50 -> 66 over 4 windows (32.0% worse, slope 5.3 worse per window)" in fired.reason
    falling = t.metric_trend(rising[::-1], metric="mae", higher_is_better=False, windows=4, max_relative_increase=0.25)
    assert not falling.fired and "(24.2% better, slope 5.3 better per window)" in falling.reason
    assert not t.metric_trend(rising, metric="mae", higher_is_better=False, windows=4, max_relative_increase=0.5).fired
    assert t.metric_trend(rising, metric="mae", higher_is_better=False, windows=4, max_slope=5.0).fired
    assert not t.metric_trend(rising, metric="mae", higher_is_better=False, windows=4, max_slope=6.0).fired
    # for accuracy, falling is worse; only the last `windows` count; gaps are skipped
    assert t.metric_trend([0.99, 0.97, None, 0.90], metric="accuracy", higher_is_better=True, windows=3,
                          max_relative_increase=0.05).fired
    assert not t.metric_trend([40.0, 90.0, 60.0, 61.0], metric="mae", higher_is_better=False, windows=2,
                              max_relative_increase=0.05).fired
    assert not t.metric_trend([None, 70.0], metric="mae", higher_is_better=False, windows=3,
                              max_relative_increase=0.0).fired


def test_drift_age_new_data_on_demand():
    assert t.data_drift(0.8, max_drift_share=0.7, drifted_columns=8, total_columns=10).reason == \
        "drift share 0.8 (8 of 10 columns) > max 0.7"
    assert not t.data_drift(0.7, max_drift_share=0.7).fired and not t.data_drift(None, max_drift_share=0.1).fired
    assert t.max_age(T0 - timedelta(days=31), as_of=T0, max_age=timedelta(days=30)).fired
    old = t.max_age(T0 - timedelta(days=30), as_of=T0, max_age=timedelta(days=30))
    assert not old.fired and "trained 30d before" in old.reason
    assert t.new_data(500, min_rows=500).fired and not t.new_data(499, min_rows=500).fired
    assert t.on_demand(True, "label fix").reason == "requested on demand: label fix"
    assert not t.on_demand(False, None).fired
    event = t.on_demand(True, "labels fixed", event="repository_dispatch")
    assert event.kind == "event" and event.reason == "event from repository_dispatch: labels fixed"



def test_max_age_after_a_rejection_waits_for_its_next_due_time():
    """A rejected candidate restarts the clock: no retrain every cycle until one passes (issue 25, item 6)."""
    span = timedelta(days=30)
    trained, rejected = T0 - timedelta(days=40), T0 - timedelta(days=8)
    waits = t.max_age(trained, as_of=T0, max_age=span, rejected_at=rejected)
    assert not waits.fired and waits.reason == ("Production trained 40d before 2012-06-01, more than max_age 30d, but a "
                                                "candidate trained 8d before was rejected: next due 2012-06-23")
    assert waits.evidence["next_due"] == "2012-06-23T00:00:00"
    assert t.max_age(trained, as_of=T0 + timedelta(days=23), max_age=span, rejected_at=rejected).fired  # due again
    # a rejection before Production was trained (an older Production's candidate) does not count
    assert t.max_age(trained, as_of=T0, max_age=span, rejected_at=trained - timedelta(days=1)).fired
    # through `assess`, as the cycle and the backtest call it
    import pandas as pd

    from mlflow_retrain.decide import assess
    from mlflow_retrain.policy.parse import parse_config

    config = parse_config({"model_name": "m", "data": {"path": "d", "timestamp": "t", "target": "y", "features": ["a"]},
                           "triggers": {"max_age": "30d"}})
    seen = dict(as_of=pd.Timestamp(T0), scores=[], drift=None, trained_at=pd.Timestamp(trained), seen_until=None,
                rows_since=0, last_retrain_at=pd.Timestamp(rejected), force=False, reason=None)
    assert assess(config, **seen).retrain
    decision = assess(config, **seen, last_rejected_at=pd.Timestamp(rejected))
    assert not decision.retrain and "next due 2012-06-23" in decision.reason


def test_debounce_and_cooldown():
    assert t.debounce([True, False, True], k=2, n=3) and not t.debounce([True, False, False, True], k=2, n=3)
    with pytest.raises(ValueError):
        t.debounce([True], k=3, n=2)
    active = t.cooldown(T0 - timedelta(days=3), as_of=T0, span=timedelta(days=7))
    assert active.fired and "within cooldown 7d" in active.reason
    assert not t.cooldown(T0 - timedelta(days=7), as_of=T0, span=timedelta(days=7)).fired
    assert not t.cooldown(None, as_of=T0, span=timedelta(days=7)).fired
    behind = t.cooldown(T0 + timedelta(days=69, hours=23), as_of=T0, span=timedelta(days=7))  # before the history
    # it says what to do instead and where a replay in order goes on (the last retrain, to the minute)
    assert behind.fired and behind.reason.startswith("last retrain 2012-08-09T23:00 is after 2012-06-01 (a cycle behind")
    assert "`mlflow-retrain replay --from 2012-08-09T23:00`" in behind.reason and "only --force" in behind.reason


def test_spans_and_times_read_in_one_unit_chosen_from_the_monitoring_window():
    hours = 3911
    assert [words.unit_for(w) for w in (timedelta(days=7), timedelta(days=1), timedelta(hours=6), None)] == \
        ["d", "d", "h", "d"]
    assert words.span_in(timedelta(hours=hours), "d") == "163d" and words.span_in(timedelta(hours=hours), "h") == "3911h"
    assert [words.span_in(timedelta(hours=h), "d") for h in (12, 36, 24, 0)] == ["0.5d", "1.5d", "1d", "0d"]
    assert words.span_in(timedelta(days=5088, hours=7), "d") == "5088d"  # not 5088.31d
    assert words.moment(T0, "d") == "2012-06-01" and words.moment(T0, "h") == "2012-06-01T00:00"
    assert words.moment(T0 + timedelta(hours=23), "d") == "2012-06-01T23:00"  # nothing lost
    assert words.moment(T0 + timedelta(seconds=5), "d") == "2012-06-01T00:00:05"
    assert words.period("2012-06-01T00:00:00..2012-06-08T00:00:00", "d") == "2012-06-01..2012-06-08"
    assert words.period("2012-06-01T00:00:00..2012-06-01T06:00:00", "h") == "2012-06-01T00:00..2012-06-01T06:00"
    # a sentence: both spans in the policy's unit, its date as a date
    daily = t.max_age(T0 - timedelta(hours=hours), as_of=T0, max_age=timedelta(days=120))
    assert daily.reason == "Production trained 163d before 2012-06-01, more than max_age 120d"
    hourly = t.max_age(T0 - timedelta(hours=hours), as_of=T0, max_age=timedelta(days=120), unit="h")
    assert hourly.reason == "Production trained 3911h before 2012-06-01T00:00, more than max_age 2880h"
    cool = t.cooldown(T0 - timedelta(hours=36), as_of=T0, span=timedelta(days=7), unit="h")
    assert cool.reason == "last retrain 2012-05-30T12:00 is 36h before 2012-06-01T00:00, within cooldown 168h"


def test_decide_records_why_not_and_what_blocked():
    hot = t.metric_threshold(90.0, metric="mae", higher_is_better=False, limit=80.0)
    cold = t.data_drift(0.1, max_drift_share=0.5)
    quiet = t.decide([cold])
    assert not quiet.retrain and quiet.reason.startswith("no trigger fired: drift share 0.1")
    go = t.decide([hot, cold])
    assert go.retrain and go.fired == ["metric_threshold"] and go.reason == "mae 90 > max 80"
    cool = t.cooldown(T0 - timedelta(days=1), as_of=T0, span=timedelta(days=7))
    blocked = t.decide([hot], cooldown=cool)
    assert not blocked.retrain and blocked.blocked_by == "cooldown" and "but last retrain" in blocked.reason
    assert t.decide([hot, t.on_demand(True, "urgent")], cooldown=cool, forced=True).retrain


def test_format_span_speaks_the_policy_file_syntax():
    assert [t.format_span(timedelta(**kw)) for kw in ({"days": 14}, {"days": 3}, {"hours": 12}, {"minutes": 90})] \
        == ["14d", "3d", "12h", "90m"]


def test_metric_triggers_ignore_windows_the_model_was_trained_on():
    """In-sample windows flatter the model: a trend from them to fresh windows is not decay."""
    import pandas as pd

    from mlflow_retrain.policy.parse import parse_config
    from mlflow_retrain.decide import WindowScore, assess

    config = parse_config({"model_name": "m", "data": {"path": "d.csv", "timestamp": "t", "target": "y",
                                                         "features": ["a"]},
                           "triggers": {"metric_threshold": {"max": 80},
                                        "metric_trend": {"windows": 4, "max_relative_increase": 0.5}}})
    ends = pd.date_range("2012-06-08", periods=4, freq="7D")
    scores = [WindowScore(f"{(e - pd.Timedelta(days=7)).isoformat()}..{e.isoformat()}", 168, m)
              for e, m in zip(ends, [15.0, 16.0, 50.0, 52.0])]

    def decide(seen_until):
        return assess(config, as_of=ends[-1], scores=scores, drift=None, trained_at=pd.Timestamp("2012-06-15"),
                      seen_until=seen_until, rows_since=0, last_retrain_at=None, force=False, reason=None)

    def trend(d):
        return next(r for r in d.results if r.kind == "metric_trend")

    counted = decide(None)  # a version not made by us: no training window known, every window counts
    assert trend(counted).fired and trend(counted).evidence["first"] == 15.0
    fresh = decide(pd.Timestamp("2012-06-15"))  # trained on rows up to the end of the 2nd window
    assert not trend(fresh).fired and trend(fresh).evidence == {**trend(fresh).evidence, "first": 50.0, "windows": 2}
    stale = decide(pd.Timestamp("2012-06-29"))  # even the latest window is in-sample
    threshold = next(r for r in stale.results if r.kind == "metric_threshold")
    assert not threshold.fired and "overlaps Production's training data" in threshold.reason
    # a weekly policy's reasons name days: no T00:00:00 on every stamp
    assert threshold.reason.startswith("2012-06-22..2012-06-29 overlaps Production's training data (until 2012-06-29)")
    fired = next(r for r in decide(None).results if r.kind == "metric_threshold")
    assert fired.reason == "mae 52 <= max 80 on 2012-06-22..2012-06-29"


def test_a_trigger_that_fires_on_every_window_is_flagged_with_what_to_change():
    """`fires_always` over the per-window history; `below_floor` when a limit is stricter than the model's own error."""
    from mlflow_retrain.decide.triggers import fires_always
    from mlflow_retrain.decide.triggers.drift import DataDrift
    from mlflow_retrain.decide.triggers.threshold import MetricThreshold

    drift, limit = DataDrift(max_drift_share=0.5), MetricThreshold(max=50.0)
    flagged = fires_always([drift, limit], {"data_drift": [True] * 6, "metric_threshold": [True, False, True, True]})
    assert flagged == ["trigger data_drift fired on 6 of 6 windows: it fires always; exclude the derived, calendar or "
                       "seasonal columns that differ from the training rows by construction "
                       "(monitoring.drift.exclude), or raise max_drift_share"]
    assert fires_always([drift], {"data_drift": [True] * 3}) == []  # too few windows to tell
    assert fires_always([drift], {}) == []
    assert limit.below_floor(62.5, metric="mae", higher_is_better=False) == (
        "trigger metric_threshold: max 50 is below Production's own mae on its training-time holdout (62.5): even a "
        "fresh model crosses it, so it fires on most windows; its limit is stricter than the model's own error (its floor): loosen it past the error a "
        "fresh model reaches (the backtest's threshold sweep shows it)")
    assert limit.below_floor(40.0, metric="mae", higher_is_better=False) is None
    assert limit.below_floor(None, metric="mae", higher_is_better=False) is None
    score = MetricThreshold(min=0.9).below_floor(0.8, metric="accuracy", higher_is_better=True)
    assert score.startswith("trigger metric_threshold: min 0.9 is above Production's own accuracy")
    assert drift.below_floor(0.9, metric="mae", higher_is_better=False) is None
