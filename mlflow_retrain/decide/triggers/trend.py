"""`metric_trend`: the rate of change, the metric worsened by more than a fraction or too steeply.

Why it is built this way: docs/design.md#decide-triggers-trend.
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


SPREAD_DEPTH = 3  # the noise is measured over this many times the trend's windows
MIN_SPREAD_VALUES = 3  # two differences at least, else the noise is unknown and the trend cannot fire


def spread(values: Sequence[float]) -> float | None:
    """The window-to-window spread: consecutive differences' standard deviation, estimated from their
    median absolute value (normal differences: median |d| = 0.6745 sd); None with too few values."""
    if len(values) < MIN_SPREAD_VALUES:
        return None
    return float(np.median(np.abs(np.diff(values))) / 0.6745)


def metric_trend(history: Sequence[float | None], *, metric: str, higher_is_better: bool, windows: int,
                 max_relative_increase: float | None = None, max_slope: float | None = None,
                 noise: float = 0.0, min_change: float = 0.0) -> TriggerResult:
    """Rate of change: the metric worsened by more than a fraction, or its slope per window is too steep,
    and by more than the noise floor: `noise` x the spread of `history` and `min_change`."""
    kind = "metric_trend"
    seen = [float(v) for v in history if v is not None and not np.isnan(v)]
    values = seen[-windows:]
    if len(values) < 2:
        return TriggerResult(False, kind, f"fewer than 2 windows with {metric} to measure a trend",
                             {"windows": len(values)})
    sign = -1.0 if higher_is_better else 1.0
    first, last = values[0], values[-1]
    change = sign * (last - first)
    relative = change / abs(first) if first else (0.0 if last == first else float("inf"))
    slope = sign * float(np.polyfit(np.arange(len(values)), values, 1)[0])
    jitter = spread(seen[-windows * SPREAD_DEPTH:]) if noise else None
    floor = max(min_change, noise * jitter if jitter is not None else 0.0)
    evidence = {"first": first, "last": last, "relative_change": relative, "slope": slope, "windows": len(values),
                "spread": jitter, "noise_floor": floor}
    fired_rel = max_relative_increase is not None and relative > max_relative_increase
    fired_slope = max_slope is not None and slope > max_slope
    text = (f"{metric} went {number(first)} -> {number(last)} over {len(values)} windows "
            f"({_direction(relative, '.1%')}, slope {_direction(slope)} per window)")
    limits = []
    if max_relative_increase is not None:
        limits.append(f"max {max_relative_increase:.0%}")
    if max_slope is not None:
        limits.append(f"max slope {number(max_slope)}")
    fired = fired_rel or fired_slope
    if fired and noise and jitter is None:
        return TriggerResult(False, kind, f"{text}; fewer than {MIN_SPREAD_VALUES} windows to tell a trend "
                                          "from noise", evidence)
    if fired and change <= floor:
        what = f"{noise:g} x spread {number(jitter)}" if jitter is not None and noise * jitter >= min_change \
            else f"min_change {number(min_change)}"
        return TriggerResult(False, kind, f"{text}; within the noise: a change of {number(change)} <= "
                                          f"{number(floor)} ({what})", evidence)
    return TriggerResult(fired, kind, f"{text}; limits {', '.join(limits)}", evidence)


@dataclass(frozen=True)
class MetricTrend(Trigger):
    name: ClassVar[str] = "metric_trend"
    rank: ClassVar[int] = 20
    advice: ClassVar[str] = "raise max_relative_increase or max_slope, or its noise factor"
    windows: int = 7
    max_relative_increase: float | None = None
    max_slope: float | None = None
    noise: float = 2.0
    min_change: float = 0.0

    @classmethod
    def read(cls, options, policy: PolicyContext) -> "MetricTrend":
        return cls(windows=options.get("windows", int, cls.windows),
                   max_relative_increase=options.get("max_relative_increase", float),
                   max_slope=options.get("max_slope", float),
                   noise=options.get("noise", float, cls.noise),
                   min_change=options.get("min_change", float, cls.min_change))

    def validate(self, options, policy: PolicyContext) -> None:
        if self.windows < 2:
            raise options.fail("windows", f"must be at least 2, got {self.windows}")
        if self.max_relative_increase is None and self.max_slope is None:
            raise options.fail("max_relative_increase", "or max_slope must be set")
        for key in ("noise", "min_change"):
            if getattr(self, key) < 0:
                raise options.fail(key, f"must be 0 or more, got {getattr(self, key):g}")

    @property
    def depth(self) -> int:
        """The trend's windows, and before them the windows its noise floor is measured on."""
        return self.windows * SPREAD_DEPTH if self.noise else self.windows

    def check(self, seen: Observations) -> TriggerResult:
        return metric_trend([s.metric for s in seen.scores], metric=seen.metric,
                            higher_is_better=seen.higher_is_better, windows=self.windows,
                            max_relative_increase=self.max_relative_increase, max_slope=self.max_slope,
                            noise=self.noise, min_change=self.min_change)

    def mark(self, seen: Observations) -> bool:
        """The dashboard's mark: the trend over the windows up to this one (the monitor passes `depth`
        of them, all served by one version) fires."""
        return self.check(seen).fired
