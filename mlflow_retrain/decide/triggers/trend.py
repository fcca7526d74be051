"""`metric_trend`: the rate of change, the metric worsened by more than a fraction or too steeply.

```yaml
triggers:
  metric_trend: {windows: 4, max_relative_increase: 0.5}   # and/or max_slope (per window)
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np

from mlflow_retrain.decide.observations import Observations
from mlflow_retrain.decide.triggers import PolicyContext, Trigger
from mlflow_retrain.decide.verdicts import TriggerResult, number


def _direction(change: float, spec: str = ".4g") -> str:
    """A change in the metric's worse direction (+) as words: 'x worse' or 'x better'."""
    return f"{abs(change):{spec}} {'worse' if change > 0 else 'better' if change < 0 else 'unchanged'}"


def metric_trend(history: Sequence[float | None], *, metric: str, higher_is_better: bool, windows: int,
                 max_relative_increase: float | None = None, max_slope: float | None = None) -> TriggerResult:
    """Rate of change: the metric worsened by more than a fraction, or its slope per window is too steep."""
    kind = "metric_trend"
    values = [float(v) for v in history if v is not None and not np.isnan(v)][-windows:]
    if len(values) < 2:
        return TriggerResult(False, kind, f"fewer than 2 windows with {metric} to measure a trend",
                             {"windows": len(values)})
    sign = -1.0 if higher_is_better else 1.0
    first, last = values[0], values[-1]
    relative = sign * (last - first) / abs(first) if first else (0.0 if last == first else float("inf"))
    slope = sign * float(np.polyfit(np.arange(len(values)), values, 1)[0])
    evidence = {"first": first, "last": last, "relative_change": relative, "slope": slope, "windows": len(values)}
    fired_rel = max_relative_increase is not None and relative > max_relative_increase
    fired_slope = max_slope is not None and slope > max_slope
    text = (f"{metric} went {number(first)} -> {number(last)} over {len(values)} windows "
            f"({_direction(relative, '.1%')}, slope {_direction(slope)} per window)")
    limits = []
    if max_relative_increase is not None:
        limits.append(f"max {max_relative_increase:.0%}")
    if max_slope is not None:
        limits.append(f"max slope {number(max_slope)}")
    return TriggerResult(fired_rel or fired_slope, kind, f"{text}; limits {', '.join(limits)}", evidence)


@dataclass(frozen=True)
class MetricTrend(Trigger):
    name: ClassVar[str] = "metric_trend"
    rank: ClassVar[int] = 20
    windows: int = 7
    max_relative_increase: float | None = None
    max_slope: float | None = None

    @classmethod
    def read(cls, options, policy: PolicyContext) -> "MetricTrend":
        return cls(windows=options.get("windows", int, cls.windows),
                   max_relative_increase=options.get("max_relative_increase", float),
                   max_slope=options.get("max_slope", float))

    def validate(self, options, policy: PolicyContext) -> None:
        if self.windows < 2:
            raise options.fail("windows", f"must be at least 2, got {self.windows}")
        if self.max_relative_increase is None and self.max_slope is None:
            raise options.fail("max_relative_increase", "or max_slope must be set")

    @property
    def depth(self) -> int:
        return self.windows

    def check(self, seen: Observations) -> TriggerResult:
        return metric_trend([s.metric for s in seen.scores], metric=seen.metric,
                            higher_is_better=seen.higher_is_better, windows=self.windows,
                            max_relative_increase=self.max_relative_increase, max_slope=self.max_slope)

    def mark(self, seen: Observations) -> bool:
        """The dashboard's mark: the trend over the windows up to this one (the monitor passes `depth`
        of them, all served by one version) fires."""
        return self.check(seen).fired
