"""The trend trigger's noise floor: day-to-day noise on a low-error series is not a trend."""

from __future__ import annotations

import numpy as np
import pytest

from mlflow_retrain.policy.parse import parse_config
from mlflow_retrain.decide.triggers.trend import MetricTrend, metric_trend, spread
from mlflow_retrain.base.errors import ConfigError


def fires(series, **kw) -> int:
    """How many of the checks over a series fire, each seeing the windows so far (as a replay would)."""
    args = {"metric": "mae", "higher_is_better": False, "windows": 4, "max_relative_increase": 0.25, **kw}
    return sum(metric_trend(series[max(0, t - 12):t + 1], **args).fired for t in range(4, len(series)))


def test_noise_on_a_low_error_series_no_longer_reads_as_a_trend():
    noise = list(0.02 + np.abs(np.random.default_rng(0).normal(0, 0.006, 200)))  # a good model, noisy days
    without, with_floor = fires(noise, noise=0.0), fires(noise, noise=2.0)
    assert without >= 20  # iid noise, no trend at all: every one of these is a false alarm
    assert with_floor <= without // 8, (without, with_floor)


def test_a_real_decay_still_fires_through_the_floor():
    rng = np.random.default_rng(1)
    decay = list(0.02 + np.abs(rng.normal(0, 0.002, 60))) + [0.02 * 1.15 ** k for k in range(1, 11)]
    result = metric_trend(decay[-12:], metric="mae", higher_is_better=False, windows=4, max_relative_increase=0.25,
                          noise=2.0)
    assert result.fired, result.reason
    assert result.evidence["noise_floor"] < result.evidence["last"] - result.evidence["first"]
    # a score decays downwards: the same rule in its direction
    score = [1 - v for v in decay[-12:]]
    assert metric_trend(score, metric="accuracy", higher_is_better=True, windows=4, max_relative_increase=0.01,
                        noise=2.0).fired


def test_one_jump_does_not_hide_itself_in_the_spread():
    # the jump under judgement is one of the differences: a robust spread ignores it
    assert spread([15.0, 16.0, 50.0, 52.0]) == pytest.approx(2 / 0.6745)
    assert metric_trend([15.0, 16.0, 50.0, 52.0], metric="mae", higher_is_better=False, windows=4,
                        max_relative_increase=0.5, noise=2.0).fired


def test_reasons_say_when_the_change_is_within_the_noise_or_too_short_to_tell():
    flat = [10.0, 13.0, 9.0, 12.0, 10.0, 13.5]
    result = metric_trend(flat, metric="mae", higher_is_better=False, windows=4, max_relative_increase=0.2,
                          noise=2.0)
    assert not result.fired and "within the noise" in result.reason and "2 x spread" in result.reason
    short = metric_trend([10.0, 14.0], metric="mae", higher_is_better=False, windows=4, max_relative_increase=0.2,
                         noise=2.0)
    assert not short.fired and "tell a trend from noise" in short.reason
    absolute = metric_trend([10.0, 10.1, 10.2, 13.0], metric="mae", higher_is_better=False, windows=4,
                            max_relative_increase=0.2, noise=0.0, min_change=5.0)
    assert not absolute.fired and "min_change 5" in absolute.reason


def test_policy_keys_and_their_checks():
    def trend(options):
        base = {"model_name": "m", "data": {"path": "d.csv", "timestamp": "t", "target": "y", "features": ["a"]}}
        config = parse_config({**base, "triggers": {"metric_trend": {"windows": 4, "max_relative_increase": 0.5,
                                                                     **options}}})
        return next(t for t in config.triggers.configured if isinstance(t, MetricTrend))

    assert trend({}).noise == 2.0 and trend({}).depth == 12
    assert trend({"noise": 0}).depth == 4 and trend({"min_change": 3}).min_change == 3.0
    with pytest.raises(ConfigError, match="noise"):
        trend({"noise": -1})
