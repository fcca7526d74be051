"""`validation.max_ratio_to_naive`: a candidate's error against a naive baseline's on the same holdout.

An absolute `max_metric` is outrun when the target's level grows (the same relative error is a larger
MAE); the naive baseline (`measure.naive`: seasonal naive or last value) grows with the level, so a
limit relative to it keeps its meaning. Kept apart from `gate.gate` so each reads as one rule.
"""

from __future__ import annotations

import math

from mlflow_retrain.decide.verdicts import number as _n


def naive_check(metric: str, candidate: float, naive: float | None, ratio: float) -> tuple[bool, str]:
    """(passed, the sentence with the numbers): the candidate's error at most `ratio` x the naive
    baseline's on the same rows. No baseline (no rows before the holdout to repeat) decides nothing."""
    if naive is None or not math.isfinite(naive):
        return True, "naive gate: no naive baseline on this holdout (no rows before it to repeat)"
    limit = ratio * naive
    passed = candidate is not None and math.isfinite(candidate) and candidate <= limit
    return passed, (f"naive gate: candidate {metric} {_n(candidate)} is {'not above' if passed else 'above'} "
                    f"{ratio:g}x the naive baseline's {_n(naive)} = {_n(limit)} ({'pass' if passed else 'fail'})")
