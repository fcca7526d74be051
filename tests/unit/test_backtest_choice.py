"""How the backtest recommends: the cheapest policy as good as the best, ties to fewer retrains, and
the comparison with a schedule of the same budget. Pure: series of window errors, no data, no store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlflow_retrain.backtest import BacktestResult, Policy, PolicyState, equal_budget, gain, schedule_curve, tied

STEPS = [pd.Timestamp("2020-01-01"), pd.Timestamp("2020-01-02")]


def result(policies: dict[str, tuple[str, int, list[float | None]]], *, tolerance: float = 0.05,
           higher_is_better: bool = False, resolution: float = 0.0) -> BacktestResult:
    states = [PolicyState(Policy(name, family, None), STEPS[0], retrains=retrains, series=series)
              for name, (family, retrains, series) in policies.items()]
    out = BacktestResult(STEPS, states, "", tolerance, None, "accuracy" if higher_is_better else "mae",
                         higher_is_better, 0.0, 0, resolution=resolution)
    out.recommended = out.recommend()
    return out


def noisy(level: float, n: int = 120, seed: int = 0, spread: float = 10.0) -> list[float]:
    return list(level + np.random.default_rng(seed).normal(0, spread, n))


def test_the_cheapest_policy_within_tolerance_of_the_best():
    base = noisy(50, spread=0.5)
    table = {"never": ("never", 0, [v * 2 for v in base]), "sparse": ("threshold", 3, [v * 1.04 for v in base]),
             "every": ("every_window", 30, base)}
    assert result(table).recommended == "sparse"
    assert result(table, tolerance=0.01).recommended == "every"
    assert result(table, tolerance=1.0).recommended == "never"
    # a score: the tolerance is on its distance from 1, so accuracies 0.900 / 0.948 / 0.950 choose alike
    scores = {k: (f, r, [1 - v / 1000 for v in s]) for k, (f, r, s) in table.items()}
    assert result(scores, higher_is_better=True).recommended == "sparse"
    assert result(scores, tolerance=0.01, higher_is_better=True).recommended == "every"


def test_a_difference_inside_the_noise_is_a_tie_and_goes_to_fewer_retrains():
    """The case from the field: trend (84 retrains) chosen over configured (52) on 5e-7 of mean error."""
    configured = noisy(1e-5, seed=1, spread=3e-6)
    trend = [v - 5e-7 + e for v, e in zip(configured, np.random.default_rng(2).normal(0, 3e-6, 120))]
    table = {"trend": ("trend", 84, trend), "configured": ("configured", 52, configured)}
    out = result(table, tolerance=0.0)
    assert out.recommended == "configured"
    rows = {r["policy"]: r for r in out.table()}
    assert rows["configured"]["tied_with_best"] and rows["configured"]["recommended"]


def test_a_real_difference_is_not_a_tie():
    good = noisy(40, seed=3)
    bad = [v + 8 for v in noisy(40, seed=4)]
    assert not tied(bad, good)
    assert result({"good": ("trend", 20, good), "bad": ("threshold", 5, bad)}, tolerance=0.0).recommended == "good"


def test_a_stated_resolution_makes_small_differences_ties():
    best = noisy(10, spread=0.0)
    worse = [v + 0.004 for v in best]  # a constant gap: the bootstrap alone calls it real
    assert not tied(worse, best) and tied(worse, best, resolution=0.01)
    table = {"every": ("every_window", 30, best), "lazy": ("threshold", 2, worse)}
    assert result(table, tolerance=0.0).recommended == "every"
    assert result(table, tolerance=0.0, resolution=0.01).recommended == "lazy"


def test_gaps_are_left_out_of_the_pairing():
    a = [1.0, None, 2.0, 3.0, None] * 10
    b = [1.0, 5.0, None, 3.0, 4.0] * 10
    assert tied(a, b)  # only the windows both scored: identical there


def test_equal_budget_schedule_is_interpolated_between_the_schedules_run():
    rows = [{"family": "never", "retrains": 0, "mean_metric": 100.0},
            {"family": "schedule", "retrains": 10, "mean_metric": 60.0},
            {"family": "schedule", "retrains": 50, "mean_metric": 40.0},
            {"family": "every_window", "retrains": 100, "mean_metric": 35.0},
            {"family": "threshold", "retrains": 30, "mean_metric": 38.0}]
    curve = schedule_curve(rows, higher_is_better=False)
    assert curve == [(0, 100.0), (10, 60.0), (50, 40.0), (100, 35.0)]
    assert equal_budget(curve, 30) == pytest.approx(50.0)
    assert equal_budget(curve, 101) is None
    assert gain(50.0, 38.0) == pytest.approx(0.24)
    # a score: distances from 1
    scores = [{**r, "mean_metric": 1 - r["mean_metric"] / 1000} for r in rows]
    assert schedule_curve(scores, higher_is_better=True)[1] == (10, pytest.approx(0.06))


def test_the_table_compares_each_policy_with_a_schedule_of_its_budget():
    table = {"never": ("never", 0, [100.0] * 20), "every-10d": ("schedule", 10, [60.0] * 20),
             "every-window": ("every_window", 100, [35.0] * 20), "configured": ("configured", 55, [36.0] * 20)}
    rows = {r["policy"]: r for r in result(table).table()}
    assert rows["configured"]["schedule_same_budget"] == pytest.approx(60 - 25 * 45 / 90)
    assert rows["configured"]["vs_schedule"] == pytest.approx(1 - 36 / (60 - 25 * 45 / 90))
    assert rows["never"]["vs_schedule"] == 0.0
