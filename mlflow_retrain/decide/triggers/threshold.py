"""`metric_threshold`: the latest out-of-sample window's error above its max (a score below its min).

```yaml
triggers:
  metric_threshold: {max: 80}   # an error metric; a score (accuracy, f1, roc_auc, r2) takes min
```
The one per-window trigger `triggers.debounce` applies to; the dashboard marks each window over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mlflow_retrain.decide.observations import Observations
from mlflow_retrain.decide.triggers import PolicyContext, Trigger
from mlflow_retrain.decide.verdicts import TriggerResult, number
from mlflow_retrain.decide.words import moment, period


def crosses(value: float | None, *, higher_is_better: bool, limit: float | None) -> bool:
    """A metric on the wrong side of the limit; no limit, no value or NaN never crosses."""
    if limit is None or value is None or np.isnan(value):
        return False
    return bool(value < limit if higher_is_better else value > limit)


def metric_threshold(value: float | None, *, metric: str, higher_is_better: bool, limit: float | None,
                     window: str = "") -> TriggerResult:
    """Absolute: an error above its max (the seed's MAX_MAE) or a score below its min."""
    kind = "metric_threshold"
    where = f" on {window}" if window else ""
    if limit is None:
        return TriggerResult(False, kind, "no threshold configured")
    if value is None or np.isnan(value):
        return TriggerResult(False, kind, f"no {metric} to compare{where}: no labelled rows", {"limit": limit})
    fired = crosses(value, higher_is_better=higher_is_better, limit=limit)
    if higher_is_better:
        text = f"{metric} {number(value)} {'<' if fired else '>='} min {number(limit)}{where}"
    else:
        text = f"{metric} {number(value)} {'>' if fired else '<='} max {number(limit)}{where}"
    return TriggerResult(fired, kind, text, {"value": float(value), "limit": limit})


@dataclass(frozen=True)
class MetricThreshold(Trigger):
    name: ClassVar[str] = "metric_threshold"
    rank: ClassVar[int] = 10
    advice: ClassVar[str] = ("its limit is stricter than the model's own error (its floor): loosen it past the "
                             "error a fresh model reaches (the backtest's threshold sweep shows it)")
    debounced: ClassVar[bool] = True
    max: float | None = None
    min: float | None = None

    @classmethod
    def read(cls, options, policy: PolicyContext) -> "MetricThreshold":
        return cls(max=options.get("max", float), min=options.get("min", float))

    def validate(self, options, policy: PolicyContext) -> None:
        needed = "min" if policy.higher_is_better else "max"
        if getattr(self, needed) is None:
            raise options.fail(needed, f"is required for metric {policy.metric}")

    def limit(self, higher_is_better: bool) -> float | None:
        return self.min if higher_is_better else self.max

    def check(self, seen: Observations) -> TriggerResult:
        latest = seen.latest
        if latest.rows and latest.metric is None:
            return TriggerResult(False, self.name, f"{period(latest.window, seen.unit)} overlaps Production's training "
                                                   f"data (until {moment(seen.seen_until, seen.unit)}): no "
                                                   f"out-of-sample {seen.metric}")
        return metric_threshold(latest.metric, metric=seen.metric, higher_is_better=seen.higher_is_better,
                                limit=self.limit(seen.higher_is_better), window=period(latest.window, seen.unit))

    def below_floor(self, own: float | None, *, metric: str, higher_is_better: bool) -> str | None:
        limit = self.limit(higher_is_better)
        if not crosses(own, higher_is_better=higher_is_better, limit=limit):
            return None
        bound, side = ("min", "above") if higher_is_better else ("max", "below")
        return (f"trigger {self.name}: {bound} {number(limit)} is {side} Production's own {metric} on its "
                f"training-time holdout ({number(own)}): even a fresh model crosses it, so it fires on most windows; {self.advice}")

    def mark(self, seen: Observations) -> bool:
        return crosses(seen.latest.metric, higher_is_better=seen.higher_is_better,
                       limit=self.limit(seen.higher_is_better))
